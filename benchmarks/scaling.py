"""Forward time and peak memory against the number of tokens: Mamba stack vs attention.

The GSM x4 + LRM x2 stack of GLSMamba-B and the global-attention baseline (same width D,
same depth 6) run on random features of one clip (batch 1, T = 5, 256 x 192 crop) at
1/16, 1/8, 1/4 and 1/2 resolution. Each measurement runs in its own subprocess so that
its peak resident memory (``ru_maxrss``) is its own; "extra memory" is that peak minus
the resident size once the model and the input exist. The exponent of time against
tokens comes from a least-squares line in log-log space.

Attention entries that would need more than 16 GB (its attention matrix, heads x L^2
float32, if the kernel materialises it) or more than 120 s (extrapolated from a
quadratic fit of the measured attention times) are reported as "not run" with the
estimates. Timings on a shared machine are noisy: compare methods within one run.

    python benchmarks/scaling.py [--repeats 3] [--json out.json] [--strides 16 8 4 2]
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

T, CROP_H, CROP_W, HEADS = 5, 256, 192, 12
MEMORY_LIMIT_GB, TIME_LIMIT_S = 16.0, 120.0
THREADS = 0  # 0: PyTorch's default
WARMUP = 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


def build_stack(kind: str, dim: int):
    """The 6 blocks of GLSMamba-B ("mamba") or 6 global-attention blocks ("attention")."""
    import torch.nn as nn

    from glsmamba.models.gsm import GSMBlock
    from glsmamba.models.lrm import LRMBlock
    from glsmamba.models.transformer import TransformerBlock

    if kind == "mamba":
        from glsmamba.models.registry import GLSMAMBA_B_WIDTHS

        widths = {**GLSMAMBA_B_WIDTHS, "dim": dim}
        common = dict(expand=widths["expand"], mlp_ratio=widths["mlp_ratio"])
        gsm = [GSMBlock(dim, T, ca_reduction=widths["ca_reduction"], **common) for _ in range(4)]
        return nn.Sequential(*gsm, *[LRMBlock(dim, **common) for _ in range(2)])
    return nn.Sequential(*[TransformerBlock(dim, HEADS) for _ in range(6)])


def worker(kind: str, stride: int, repeats: int, dim: int, warmup: int = 1) -> dict:
    """Run in a subprocess: time ``repeats`` forwards (after ``warmup`` untimed ones)."""
    import torch

    torch.manual_seed(0)
    stack = build_stack(kind, dim).eval()
    h, w = CROP_H // stride, CROP_W // stride
    tokens = torch.randn(1, T, h, w, dim)
    base = _rss_bytes()
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            stack(tokens)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(kind=kind, stride=stride, tokens=T * h * w, time_s=sorted(times)[len(times) // 2],
                times_s=times, extra_memory_gb=max(peak - base, 0) / 1e9)


def _run_worker(kind: str, stride: int, repeats: int, dim: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(stride), "--repeats", str(repeats),
           "--dim", str(dim)]
    if THREADS:
        cmd += ["--threads", str(THREADS)]
    cmd += ["--warmup", str(WARMUP)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        return dict(kind=kind, stride=stride, tokens=_tokens(stride), error=out.stderr.strip()[-400:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tokens(stride: int) -> int:
    return T * (CROP_H // stride) * (CROP_W // stride)


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(time) against log(tokens), least squares."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def quadratic_time(points: list[tuple[int, float]], tokens: int) -> float:
    """Extrapolate t = a + b L + c L^2 (least squares; fewer points: t ~ L^2 from the largest)."""
    if len(points) >= 3:
        import numpy as np

        coeffs = np.polyfit([n for n, _ in points], [t for _, t in points], 2)
        estimate = float(np.polyval(coeffs, tokens))
        if estimate > 0:
            return estimate
    n, t = max(points)
    return t * (tokens / n) ** 2


def run_all(strides: list[int], repeats: int, dim: int) -> dict:
    results = {"mamba": [], "attention": []}
    for stride in strides:
        results["mamba"].append(_run_worker("mamba", stride, repeats, dim))
        print(_line(results["mamba"][-1]), flush=True)
    for stride in strides:
        tokens = _tokens(stride)
        done = [(r["tokens"], r["time_s"]) for r in results["attention"] if "time_s" in r]
        memory_gb = HEADS * tokens ** 2 * 4 / 1e9
        time_est = quadratic_time(done, tokens) if done else 0.0
        if memory_gb > MEMORY_LIMIT_GB or time_est > TIME_LIMIT_S * 1.0:
            entry = dict(kind="attention", stride=stride, tokens=tokens, not_run=True,
                         estimated_time_s=time_est, attention_matrix_gb=memory_gb)
        else:
            entry = _run_worker("attention", stride, repeats, dim)
            entry["attention_matrix_gb"] = memory_gb
        results["attention"].append(entry)
        print(_line(entry), flush=True)
    for kind, entries in list(results.items()):
        points = [(r["tokens"], r["time_s"]) for r in entries if "time_s" in r]
        results[f"{kind}_exponent"] = fit_exponent(points)
    return results


def _line(r: dict) -> str:
    head = f"{r['kind']:<10} 1/{r['stride']:<3} {r['tokens']:>7} tokens  "
    if r.get("not_run"):
        return head + (f"not run: estimated {r['estimated_time_s']:.0f} s, attention matrix "
                       f"{r['attention_matrix_gb']:.1f} GB")
    if "error" in r:
        return head + f"failed: {r['error']}"
    return head + f"{r['time_s']:8.3f} s   extra memory {r['extra_memory_gb']:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--strides", type=int, nargs="+", default=[16, 8, 4, 2])
    parser.add_argument("--dim", type=int, default=None, help="width D (default: GLSMamba-B's)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per measurement (default: PyTorch's); 1 avoids "
                             "thread-pool stalls when other jobs share the cores")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards before timing")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "STRIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from glsmamba.models.registry import GLSMAMBA_B_DIM

    dim = args.dim or GLSMAMBA_B_DIM
    global THREADS, WARMUP
    THREADS, WARMUP = args.threads, args.warmup
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats, dim, args.warmup)))
        return 0
    print(f"T={T}, crop {CROP_H}x{CROP_W}, D={dim}, batch 1, forward only, median of "
          f"{args.repeats}, threads {args.threads or 'default'}")
    results = run_all(sorted(args.strides, reverse=True), args.repeats, dim)
    for kind in ("mamba", "attention"):
        exponent = results[f"{kind}_exponent"]
        text = "n/a" if exponent is None else f"{exponent:.2f}"
        print(f"{kind}: time ~ tokens^{text}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
