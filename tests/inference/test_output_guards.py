"""`glsmamba infer` never replaces its input nor a file it did not write, and never writes
through a link planted at its partial names (issue 18, classes 1 and 2)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from glsmamba.cli import main
from glsmamba.inference.infer import infer
from glsmamba.outputs import OutputRefused

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(**kwargs):
    return dict(progress=False, log=lambda *_: None, **kwargs)


@pytest.fixture()
def clip_dir(tmp_path, walking):
    """DIR/clip.mp4 (the input), DIR/clip.json (the user's), DIR/det.json (boxes)."""
    frames, boxes = walking
    folder = tmp_path / "DIR"
    folder.mkdir()
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    (folder / "clip.json").write_text('{"mine": true}')
    records = [{"frame_index": t, "bbox": b, "score": 0.9} for t, b in enumerate(boxes)]
    (folder / "det.json").write_text(json.dumps(records))
    return folder


def files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_infer_into_the_input_folder_is_refused(tiny_checkpoint, clip_dir, capsys):
    before = files(clip_dir)
    for extra in ([], ["--overwrite"]):
        rc = main(["infer", str(clip_dir / "clip.mp4"), "--checkpoint", str(tiny_checkpoint),
                   "--detections", str(clip_dir / "det.json"), "--out", str(clip_dir),
                   "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "input of the command" in err or "not written by glsmamba infer" in err
    assert files(clip_dir) == before
    assert not list(clip_dir.glob(".*"))


def test_foreign_outputs_need_overwrite_and_own_outputs_are_replaced(tiny_checkpoint, clip_dir,
                                                                     tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.json").write_text('{"mine": true}')
    source, det = str(clip_dir / "clip.mp4"), str(clip_dir / "det.json")
    with pytest.raises(OutputRefused, match="not written by glsmamba infer"):
        infer(source, tiny_checkpoint, detections=det, out_dir=out, **quiet())
    assert files(out) == {"clip.json": b'{"mine": true}'}
    infer(source, tiny_checkpoint, detections=det, out_dir=out, overwrite=True, **quiet())
    first = json.loads((out / "clip.json").read_text())
    assert first["glsmamba"]["command"] == "infer" and len(first["images"]) == 8
    infer(source, tiny_checkpoint, detections=det, out_dir=out, **quiet())   # ours: replaced
    (out / "clip.mp4").write_bytes(b"user replaced the video")
    with pytest.raises(OutputRefused, match="clip.mp4: this file exists"):
        infer(source, tiny_checkpoint, detections=det, out_dir=out, **quiet())
    assert (out / "clip.mp4").read_bytes() == b"user replaced the video"


def test_links_planted_at_partial_names_are_not_followed(tiny_checkpoint, clip_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    for name in (".clip.partial.jsonl", ".clip.partial.mp4", "clip.json"):
        (out / name).symlink_to(victim)
    with pytest.raises(OutputRefused):                 # clip.json: a link it did not write
        infer(str(clip_dir / "clip.mp4"), tiny_checkpoint, detections=str(clip_dir / "det.json"),
              out_dir=out, **quiet())
    (out / "clip.json").unlink()
    stats = infer(str(clip_dir / "clip.mp4"), tiny_checkpoint,
                  detections=str(clip_dir / "det.json"), out_dir=out, **quiet())
    assert victim.read_bytes() == b"precious"
    assert stats["frames"] == 8 and not (out / "clip.mp4").is_symlink()
    assert not (out / ".clip.partial.jsonl").exists()
    assert np.asarray(json.loads((out / "clip.json").read_text())["images"]).size == 8
