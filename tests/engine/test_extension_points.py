"""The "How to add..." paths of docs/ARCHITECTURE.md, each followed by a toy defined here,
with no edit to the package: a dataset (a parser class + its metainfo JSON), a metric, a
model preset, a scan backend and an evaluation protocol, trained and evaluated through the
CLI (``glsmamba train`` / ``glsmamba eval``)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from glsmamba.cli import main
from glsmamba.data.datasets import PoseDataset, VideoInfo, clip_indices, register_dataset
from glsmamba.data.sample import PoseSample
from glsmamba.config import DEFAULTS, dump_config, load_config
from glsmamba.evaluation.metrics import Metric, register_metric

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_OVERRIDES = {"input_size": (48, 64), "dim": 16, "d_state": 1, "gsm_depth": 1,
                  "lrm_depth": 1, "mlp_ratio": 1.0}
KEEP = [0, 5, 6, 11, 12]        # PoseTrack18 nose, shoulders, hips -> the toy's 5 joints


@register_dataset("toy_five_joints")
class ToyFiveJoints(PoseDataset):
    """A parser of its own: PoseTrack18-layout files, five joints kept."""

    default_metainfo = str(Path(__file__).with_name("toy_five_joints.json"))
    metric = "toy_hits"
    detected_boxes = False

    @classmethod
    def for_split(cls, root, ann, *, mode, delta, window, split, detections, det_score_thr,
                  clip_detections):
        return cls(cls.annotation_path(root, ann, split, mode), root, delta)

    def __init__(self, ann_dir: Path, root: Path, delta: int):
        super().__init__(self.default_metainfo, root)
        self.ann_path = str(ann_dir)
        for file in sorted(Path(ann_dir).glob("*.json")):
            data = json.loads(file.read_text())
            images = sorted(data["images"], key=lambda image: image["frame_id"])
            frames = [self.image_path(image["file_name"]) for image in images]
            position = {image["id"]: i for i, image in enumerate(images)}
            self.videos[file.stem] = VideoInfo(file.stem, str(file), data["images"], frames)
            for ann in data["annotations"]:
                points = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)[KEEP]
                t = position[ann["image_id"]]
                self.samples.append(PoseSample(
                    image_path=frames[t], bbox_xywh=np.asarray(ann["bbox"], np.float32),
                    frame_paths=[frames[i] for i in clip_indices(t, len(frames), delta)],
                    keypoints=points[:, :2], visible=(points[:, 2] > 0).astype(np.float32),
                    image_id=ann["image_id"], video_id=file.stem, frame_index=t))


@register_metric
class ToyHits(Metric):
    """Percent of visible joints predicted within 10 pixels."""

    name = "toy_hits"
    key = "hits"

    def score(self, predictions, dataset, out_dir=None, image_ids=None, **write_options):
        hits = []
        for prediction in predictions:
            sample = dataset.samples[prediction["index"]]
            error = np.linalg.norm(prediction["keypoints"][:, :2] - sample.keypoints, axis=1)
            hits += list(error[sample.visible > 0] < 10)
        return 100.0 * float(np.mean(hits))

    def summary(self, result):
        return {self.key: result}

    def format_table(self, result, title=None, markdown=False):
        return f"{title or 'toy'}\nhits {result:.1f}"

    def describe(self):
        return "toy metric: joints within 10 px"


@pytest.fixture()
def toy_preset_and_backend(monkeypatch):
    """A preset (a small GLSMamba) and a scan backend that counts its calls."""
    from glsmamba.models import get_spec, register_model, unregister_model
    from glsmamba.ops import selective_scan
    from glsmamba.ops.scan_chunked import selective_scan_chunked
    calls = []

    def toy_backend(u, delta, A, B, C, D, delta_bias, delta_softplus):
        calls.append(tuple(u.shape))
        return selective_scan_chunked(u, delta, A, B, C, D, delta_bias, delta_softplus)

    monkeypatch.setitem(selective_scan.REGISTERED_BACKENDS, "toy-chunked", toy_backend)
    tiny = get_spec("glsmamba-tiny")
    defaults = {**tiny.defaults, **TINY_OVERRIDES}
    register_model("toy-glsmamba", tiny.builder, "test toy", **defaults)
    yield calls
    unregister_model("toy-glsmamba")


def _config_file(tmp_path: Path, synth_root: Path, **data) -> Path:
    config = copy.deepcopy(DEFAULTS)
    config["model"].update(name="toy-glsmamba", overrides={"scan_backend": "toy-chunked"},
                           random_encoder_ok=True)
    config["data"].update(root=str(synth_root), val_detections="", batch_size=2,
                          val_batch_size=4, workers=0, augment=False, delta=1, **data)
    config["train"].update(epochs=1, lr=1e-3, log_interval=1, val_interval=1, amp="off",
                           max_steps=1)
    config["eval"].update(flip_test=False)
    path = tmp_path / "toy.toml"
    path.write_text(dump_config(config))
    return path


def test_toy_dataset_metric_preset_and_backend_through_the_cli(
        toy_preset_and_backend, synth_root, tmp_path, capsys):
    from safetensors.torch import load_file
    config = _config_file(tmp_path, synth_root, type="toy_five_joints")
    work_dir = tmp_path / "run"
    assert main(["train", str(config), "--work-dir", str(work_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "hits" in out                                     # the toy metric's table
    assert toy_preset_and_backend                             # the toy backend scanned
    head = load_file(str(work_dir / "last.safetensors"))["head.final_layer.weight"]
    assert head.shape[0] == 5                                 # joints from the toy metainfo
    assert main(["eval", str(config), "--checkpoint", str(work_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "hits" in out and "toy metric: joints within 10 px" in out


def test_unknown_dataset_type_lists_the_registered_ones(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\ntype = "nope"\n')
    with pytest.raises(Exception, match="toy_five_joints") as err:
        load_config(path)
    assert "jhmdb_mat" in str(err.value)                    # selectable: derived, not copied


def test_toy_protocol_is_selectable_and_applied(toy_preset_and_backend, synth_root, tmp_path,
                                                capsys, monkeypatch):
    from glsmamba.evaluation.protocols import PROTOCOLS, Protocol
    toy = Protocol("toy-gt-nms", "gt", 0.0, "peak", "box", 0.2, 0.5, None,
                   "toy: GT boxes, OKS-NMS at 0.5")
    monkeypatch.setitem(PROTOCOLS, toy.name, toy)
    config = _config_file(tmp_path, synth_root, type="posetrack18")
    work_dir = tmp_path / "run"
    assert main(["train", str(config), "--work-dir", str(work_dir), "--no-progress",
                 "--set", "train.val_interval=0", "--set", "eval.protocol=toy-gt-nms"]) == 0
    out_dir = tmp_path / "pred"
    assert main(["eval", str(config), "--checkpoint", str(work_dir), "--no-progress",
                 "--protocol", "toy-gt-nms", "--out", str(out_dir)]) == 0
    assert "protocol toy-gt-nms: toy: GT boxes, OKS-NMS at 0.5" in capsys.readouterr().out
    assert 'protocol = "toy-gt-nms"' in (out_dir / "eval_meta.toml").read_text()
