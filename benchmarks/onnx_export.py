"""ONNX export: ONNX Runtime vs PyTorch on the CPU, export time, and the scan formulation.

    python benchmarks/onnx_export.py --demo-run DEMO/runs/glsmamba_t5 --out /tmp/onnx_bench

In one run, each measurement in a fresh subprocess (so that its peak resident memory is its
own):

* the demo's model (``--demo-run``, a run folder; default: a random glsmamba-tiny) and
  glsmamba-b (random weights, 5 x 256 x 192): PyTorch (the fused C scan) and ONNX Runtime
  (CPU provider) clips/s at batch 1 and the process's peak RSS;
* the export time of glsmamba-b (``glsmamba export``'s whole job: trace, check, write);
* the selective scan alone in ONNX Runtime, in the three forms of
  ``glsmamba/ops/scan_export.py`` (the exported Loop over 8-step chunks, the loop-free
  blocked parallel scan, a Loop over single steps), at the demo's and glsmamba-b's sizes.

Writes ``OUT/onnx_export.json`` and ``OUT/onnx_export.md``. ``--threads`` (default 2) is
used by both runtimes.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _source(spec: str, overrides: list[str] | None = None):
    """``preset:NAME`` or ``config:TOML`` (random weights, ``overrides`` applied), else a
    run folder / checkpoint."""
    from glsmamba.export.onnx_export import ExportSource, load_source, preset_source
    if spec.startswith("preset:"):
        return preset_source(spec[len("preset:"):], overrides)
    if spec.startswith("config:"):
        from glsmamba.engine.builder import build_model
        from glsmamba.config import load_config
        config = load_config(spec[len("config:"):], overrides)
        model = build_model(config, log=lambda *_: None, for_training=False)
        return ExportSource(model.eval(), config, config["model"]["name"])
    return load_source(spec, overrides=overrides)


def _clip(model, batch: int = 1):
    import torch
    width, height = model.input_size
    return torch.randn(batch, model.num_frames, 3, height, width,
                       generator=torch.Generator().manual_seed(0))


def _timed(fn, repeat: int) -> float:
    """Seconds per call (one warm-up call first)."""
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def worker_torch(args) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    base = _peak_rss_mb()
    model = _source(args.source, args.set).model
    clip = _clip(model)
    with torch.no_grad():
        seconds = _timed(lambda: model(clip), args.repeat)
    return {"clips_per_s": 1 / seconds, "peak_rss_mb": _peak_rss_mb(), "rss_after_imports_mb": base}


def worker_ort(args) -> dict:
    import numpy as np

    from glsmamba.export.onnx_export import ort_session
    from glsmamba.export.runtime import read_export_metadata
    base = _peak_rss_mb()
    meta = read_export_metadata(args.file)
    session = ort_session(args.file, args.threads)
    shape = [1 if d == "batch" else d for d in meta["input"]["shape"]]
    clip = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    seconds = _timed(lambda: session.run(None, {meta["input"]["name"]: clip}), args.repeat)
    return {"clips_per_s": 1 / seconds, "peak_rss_mb": _peak_rss_mb(), "rss_after_imports_mb": base}


def worker_export(args) -> dict:
    import torch

    from glsmamba.export.onnx_export import export_onnx
    torch.set_num_threads(args.threads)
    started, cpu = time.perf_counter(), time.process_time()
    src = _source(args.source, args.set)
    built = time.perf_counter() - started
    meta = export_onnx(src, args.file, overwrite=True)
    return {"seconds": time.perf_counter() - started, "model_build_seconds": built,
            "cpu_seconds": time.process_time() - cpu, "max_abs_diff": meta["check"]["max_abs_diff"],
            "peak_rss_mb": _peak_rss_mb(), "file_mb": Path(args.file).stat().st_size / 1e6}


class _Scan:
    """The scan ``fn`` with fixed A, D, bias as a module of (u, delta, B, C)."""

    def __new__(cls, fn, A, D, bias):
        import torch

        class Scan(torch.nn.Module):
            def forward(self, u, delta, B, C):
                return fn(u, delta, A, B, C, D, bias, True)
        return Scan()


def worker_scan(args) -> dict:
    """ONNX Runtime ms per scan: the exported form (a Loop over chunks of 8 steps), the
    loop-free blocked parallel scan, and a Loop over single steps."""
    import numpy as np
    import onnxruntime
    import torch

    from glsmamba.ops import scan_export
    channels, n_state, length = args.scan
    paths = 6
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, channels, length, generator=g), torch.randn(1, channels, length, generator=g)
    A = -torch.rand(channels, n_state, generator=g) * 4
    B, C = (torch.randn(1, paths, n_state, length, generator=g) for _ in range(2))
    D, bias = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
    result = {}
    forms = (("chunk_loop", scan_export.selective_scan_export),
             ("parallel", scan_export.selective_scan_parallel),
             ("step_loop", scan_export.selective_scan_loop))
    for name, fn in forms:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Scan(fn, A, D, bias), (u, delta, B, C), buffer, dynamo=False, opset_version=17,
                              input_names=["u", "delta", "B", "C"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(buffer.getvalue(), options,
                                               providers=["CPUExecutionProvider"])
        feed = {"u": u.numpy(), "delta": delta.numpy(), "B": B.numpy(), "C": C.numpy()}
        result[f"{name}_ms"] = 1e3 * _timed(lambda: session.run(None, feed), args.repeat)
        expected = scan_export.selective_scan_parallel(u, delta, A, B, C, D, bias, True).numpy()
        result[f"{name}_max_abs_diff"] = float(np.abs(session.run(None, feed)[0] - expected).max())
    return result


WORKERS = {"torch": worker_torch, "ort": worker_ort, "export": worker_export, "scan": worker_scan}


def _run_worker(name: str, *extra: str) -> dict:
    command = [sys.executable, __file__, "--worker", name, *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _markdown(results: dict, threads: int) -> str:
    lines = ["| model | PyTorch clips/s | ORT clips/s | PyTorch peak RSS (MB) | ORT peak RSS (MB) |",
             "|---|---|---|---|---|"]
    for name, row in results["models"].items():
        lines.append(f"| {name} | {row['torch']['clips_per_s']:.3g} | {row['ort']['clips_per_s']:.3g} | "
                     f"{row['torch']['peak_rss_mb']:.0f} | {row['ort']['peak_rss_mb']:.0f} |")
    export = results["export_glsmamba_b"]
    lines += ["", f"Export of glsmamba-b (5 x 256 x 192): {export['seconds']:.0f} s wall, "
              f"{export['cpu_seconds']:.0f} s CPU, file {export['file_mb']:.0f} MB, "
              f"max abs heatmap diff {export['max_abs_diff']:.1e}.", "",
              "| scan (K*D, N, L) | Loop over 8-step chunks (exported) | parallel, no loop | Loop over steps |",
              "|---|---|---|---|"]
    for shape, row in results["scan"].items():
        lines.append(f"| {shape} | {row['chunk_loop_ms']:.0f} ms | {row['parallel_ms']:.0f} ms | "
                     f"{row['step_loop_ms']:.0f} ms |")
    lines += ["", f"batch 1, {threads} threads in each runtime."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-run", default="preset:glsmamba-tiny",
                   help="the demo's run folder (default: a random glsmamba-tiny)")
    p.add_argument("--demo-set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the demo's model (e.g. data.delta=2)")
    p.add_argument("--out", help="folder for onnx_export.json / .md")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-b", action="store_true", help="leave glsmamba-b out (quick run)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--scan", type=int, nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker](a)))
        return
    if not a.out:
        p.error("--out is required")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--threads", str(a.threads), "--repeat", str(a.repeat)]
    demo_set = [f"--demo-set={item}" for item in a.set]
    models = {"demo": a.demo_run} if a.skip_b else {"demo": a.demo_run, "glsmamba-b": "preset:glsmamba-b"}
    results: dict = {"threads": a.threads, "models": {}, "scan": {}}
    for name, source in models.items():
        file = str(out / f"{name}.onnx")
        extra = [*common, *(demo_set if name == "demo" else [])]
        exported = _run_worker("export", "--source", source, "--file", file, *extra)
        if name == "glsmamba-b":
            results["export_glsmamba_b"] = exported
        results["models"][name] = {"export": exported,
                                   "torch": _run_worker("torch", "--source", source, *extra),
                                   "ort": _run_worker("ort", "--file", file, *common)}
        print(name, json.dumps(results["models"][name]), flush=True)
    results.setdefault("export_glsmamba_b", results["models"]["demo"]["export"])
    for shape in ((192, 1, 960), (1152, 16, 1536)):   # demo GSM scan; glsmamba-b's, L cut to 1/10
        results["scan"][str(shape)] = _run_worker("scan", "--scan", *map(str, shape), *common)
        print(shape, json.dumps(results["scan"][str(shape)]), flush=True)
    from glsmamba.fileio import atomic_write_text, write_json_atomic
    write_json_atomic(out / "onnx_export.json", results, indent=2)
    atomic_write_text(out / "onnx_export.md", _markdown(results, a.threads))
    print(_markdown(results, a.threads))


if __name__ == "__main__":
    main()
