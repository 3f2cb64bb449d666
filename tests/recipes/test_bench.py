"""``glsmamba bench``: rows, aggregation and the quick run end to end."""
from __future__ import annotations

import json
import math

import cv2
import pytest

from glsmamba.cli import main
from glsmamba.recipes import bench, demo


def test_mean_std_is_the_sample_standard_deviation():
    mean, std = bench.mean_std([1.0, 2.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(math.sqrt(7.0))          # ((4 + 1 + 9) / 2) ** 0.5
    assert bench.mean_std([5.0]) == (5.0, 0.0)
    assert bench.mean_std([float("nan"), 4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in bench.mean_std([]))


def test_rows_are_the_papers_ablations_with_the_registry_switches():
    keys = [key for key, *_ in bench.ROWS]
    assert keys == ["backbone", "t1", "gsm", "full", "unified", "unified_spatial", "no_stmm",
                    "attention", "causal"]
    assert bench.preset_switches("glsmamba-b-no-lrm") == {"lrm_depth": 0}
    assert bench.preset_switches("glsmamba-b-unified") == {"scan_types": ["unified"]}
    assert bench.preset_switches("glsmamba-b-no-stmm") == {"use_stmm": False}


def test_row_configs_share_encoder_resolution_and_width(tmp_path):
    recipe = bench.FULL
    base = demo.base_config(tmp_path, recipe, 0)
    specs = {key: spec for key, _, spec, _ in bench.ROWS}
    full = bench.row_config(base, recipe, "enc.safetensors", specs["full"])
    t1 = bench.row_config(base, recipe, "enc.safetensors", specs["t1"])
    unified = bench.row_config(base, recipe, "enc.safetensors", specs["unified"])
    attention = bench.row_config(base, recipe, "enc.safetensors", specs["attention"])
    assert full["data"]["delta"] == 2 and t1["data"]["delta"] == 0
    assert full["model"]["overrides"] == {**t1["model"]["overrides"]}
    assert unified["model"]["overrides"]["scan_types"] == ["unified"]
    assert attention["model"]["name"] == "trans-b-hr"
    over = attention["model"]["overrides"]
    assert over["encoder_arch"] == "vit-tiny" and over["dim"] == full["model"]["overrides"]["dim"]
    assert over["depth"] == 2                             # 1 GSM + 1 LRM
    for config in (full, t1, unified, attention):
        assert config["model"]["overrides"]["feature_stride"] == 4
        assert config["model"]["overrides"]["input_size"] == recipe["input_size"]
        assert config["train"]["epochs"] == recipe["stage2_epochs"]
    from glsmamba.engine.builder import build_model
    model = build_model(attention, log=lambda *_: None, for_training=False)
    assert model.feature_size == (recipe["input_size"][0] // 4, recipe["input_size"][1] // 4)


def test_causal_row_is_the_full_row_on_causal_clips(tmp_path):
    recipe = bench.FULL
    base = demo.base_config(tmp_path, recipe, 0)
    specs = {key: spec for key, _, spec, _ in bench.ROWS}
    full = bench.row_config(base, recipe, "enc.safetensors", specs["full"])
    causal = bench.row_config(base, recipe, "enc.safetensors", specs["causal"])
    assert full["data"]["window"] == "centered" and causal["data"]["window"] == "causal"
    assert {**causal, "data": None} == {**full, "data": None}     # only the window differs
    assert {k: v for k, v in causal["data"].items() if k != "window"} == \
        {k: v for k, v in full["data"].items() if k != "window"}
    from glsmamba.engine.builder import build_model
    model = build_model(causal, log=lambda *_: None, for_training=False)
    assert model.num_frames == 5 and model.target_index == 4


def test_aggregate_keeps_row_order_and_reports_spread():
    records = [{"row": row, "seed": seed, "metrics": {"overall": v, "degraded": v - 1,
                                                      "clean": v + 1},
                "trainable_params": 1000, "train_s": 10.0}
               for row, values in (("full", (30.0, 34.0)), ("backbone", (20.0, 20.0)))
               for seed, v in zip((0, 1), values)]
    rows = bench.aggregate(records)
    assert [r["row"] for r in rows] == ["backbone", "full"]
    assert rows[1]["degraded"] == pytest.approx((31.0, math.sqrt(8.0)))
    table = bench.bench_table(rows)
    assert "| + GSM + LRM (full) |" in table and "31.0 ± 2.8" in table and "86.9" in table


def test_gain_over_t1_is_paired_by_seed():
    def record(row, seed, degraded):
        return {"row": row, "seed": seed, "trainable_params": 1, "train_s": 1.0,
                "metrics": {"overall": degraded, "degraded": degraded, "clean": 50.0}}
    # seed 1's split is 10 points easier for every row: the spread of each row is large,
    # the paired gain exact
    records = [record("t1", 0, 30.0), record("t1", 1, 40.0), record("t1", 2, 35.0),
               record("full", 0, 34.0), record("full", 1, 44.0), record("full", 2, 39.0),
               record("gsm", 0, 31.0)]            # one seed only: paired on it alone
    rows = {r["row"]: r for r in bench.aggregate(records)}
    assert rows["full"]["degraded"][1] == pytest.approx(5.0)
    assert rows["full"]["degraded_vs_t1"] == pytest.approx((4.0, 0.0))
    assert rows["gsm"]["degraded_vs_t1"] == pytest.approx((1.0, 0.0))
    table = bench.bench_table(list(rows.values()))
    assert "| +4.0 ± 0.0 |" in table and "| +1.0 ± 0.0 |" in table
    no_t1 = bench.aggregate([r for r in records if r["row"] != "t1"])
    assert "| - |" in bench.bench_table(no_t1)


def test_unknown_rows_are_refused(tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path / "b"), "--quick", "--rows", "nope"]) == 2
    assert "unknown bench row" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quick_runs_end_to_end(tmp_path, capsys):
    """2 seeds x 4 rows of the quick recipe: ~20 s of CPU, 2 min wall on a busy 2-core box."""
    out = tmp_path / "bench"
    args = ["bench", "--out", str(out), "--quick", "--seeds", "0", "1",
            "--rows", "backbone", "t1", "full", "attention", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| + GSM + LRM (full) |" in printed and "± " in printed
    report = out / "report"
    assert cv2.imread(str(report / "bench.png")) is not None
    data = json.loads((report / "results.json").read_text())
    assert [r["row"] for r in data["rows"]] == ["backbone", "t1", "full", "attention"]
    records = data["records"]
    assert len(records) == 8
    steps = {r["seed"]: r["steps"] for r in records if r["row"] == "full"}
    for record in records:    # the same budget as the full row of the same seed
        assert record["steps"] == steps[record["seed"]]
    assert {r["delta"] for r in records if r["row"] == "t1"} == {0}
    assert "Wall time" in (report / "bench.md").read_text()
    for seed in (0, 1):     # the T = 5 rows (attention too) read one shared train + val cache
        shared = out / f"seed{seed}" / "feature_cache_t5" / "feature_cache"
        assert len([p for p in shared.iterdir() if p.is_dir()]) == 2
    # a second run resumes: nothing is trained again
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert main(args) == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}


def test_a_subset_missing_at_one_seed_is_counted():
    records = [{"row": "full", "seed": seed, "trainable_params": 1, "train_s": 1.0,
                "metrics": {"overall": 10.0, "degraded": 10.0, "clean": clean}}
               for seed, clean in ((0, 20.0), (1, float("nan")))]
    table = bench.bench_table(bench.aggregate(records))
    assert "20.0 ± 0.0 (n = 1)" in table and "10.0 ± 0.0 |" in table
