"""DDP on CPU: two gloo processes via torchrun train like one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from glsmamba.engine.distributed import ResumableSampler, shard_indices, DistInfo

HERE = Path(__file__).parent

SCRIPT = textwrap.dedent("""
    import copy, sys
    import torch
    sys.path.insert(0, {here!r})
    from engine_standins import TinyClipSet, TinyPoseModel
    from glsmamba.engine import distributed as du
    from glsmamba.config import DEFAULTS
    from glsmamba.engine.trainer import Trainer

    info = du.init_distributed("cpu")
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(batch_size={batch}, workers=0)
    config["train"].update(epochs=3, lr=1e-2, milestones=[2], log_interval=1, val_interval=1)
    torch.manual_seed(0)
    model = TinyPoseModel(dropout=0.0)
    def validate(m):
        # every rank computes its share; rank 0 gets all of them
        share = du.gather_objects([info.rank] * (info.rank + 1))
        return {{"mAP": float(len(share)), "ranks": float(sum(share))}}
    trainer = Trainer(model, TinyClipSet(), config, sys.argv[1], validate=validate,
                      metric_key="mAP", progress=False)
    trainer.fit()
    du.cleanup()
""")


def losses(work_dir: Path) -> list[float]:
    lines = (work_dir / "log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"train"' in line]



def test_ddp_two_processes_matches_single(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(here=str(HERE), batch=2))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(29500 + os.getpid() % 1000), str(script), str(tmp_path / "ddp")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    # the same script in this process, one rank with the global batch of 4
    single_script = SCRIPT.format(here=str(HERE), batch=4)
    argv = sys.argv
    try:
        sys.argv = ["single", str(tmp_path / "single")]
        exec(compile(single_script, "single", "exec"), {"__name__": "single"})
    finally:
        sys.argv = argv
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(ddp) == len(single) == 12          # rank 0 alone logs: no duplicate lines
    assert ddp[-1] < 0.7 * ddp[0]
    # same samples per step (2 ranks x 2 == 1 x 4), so the curves agree up to rounding
    torch.testing.assert_close(torch.tensor(ddp), torch.tensor(single), rtol=1e-4, atol=1e-6)
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert [f for f in files if f.endswith(".safetensors")] == ["best.safetensors",
                                                                "last.safetensors"]
    assert not [f for f in files if ".tmp" in f]
    val = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
           if '"val"' in line]
    assert val[0]["mAP"] == 3.0 and val[0]["ranks"] == 2.0   # gathered from both ranks


def test_resumable_sampler_skips_and_shards():
    data = list(range(10))
    full = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    full.set_epoch(4)
    order = list(full)
    part = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    part.set_epoch(4)
    part.set_start(2)
    assert list(part) == order[2:] and len(part) == 3
    other = ResumableSampler(data, num_replicas=2, rank=0, seed=3)
    other.set_epoch(4)
    assert sorted(order + list(other)) == data
    assert shard_indices(5, DistInfo(1, 2, 1)) == [3, 4]
