"""Peak memory and time of one training step (frozen encoder, AdamW), per clip.

    python benchmarks/train_memory.py glsmamba-b [--batch B] [--bf16] [--checkpointing]

One warm-up step, then one step under ``torch.profiler.profile(profile_memory=True)``:
the ``[memory]`` allocation events (allocations positive, frees negative) are summed in
time order and the running maximum is the peak of live tensor bytes the step adds on
top of what already exists (weights, AdamW state). On CUDA ``torch.cuda.max_memory_allocated``
is printed as well. The step is: zero_grad, forward (encoder under no_grad, the trainable
part under bf16 autocast with ``--bf16``), fp32 heatmap MSE, backward, AdamW step.

Projected peak for ``--project`` clips (default 32): weights + AdamW state (measured) +
the gradients + ``project`` x the per-clip step peak without the gradients (the step
peak is the maximum over the encoder phase and the trainable phase, both of which grow
with the batch). A separate profiled no-grad encoder forward gives the encoder's
transient per clip (printed; it is included in the step peak when it dominates).

The step time printed is the wall time and the process CPU time of unprofiled steps
(``--repeats`` of each) measured in the same process; with ``--compare`` the same model
is also timed with checkpointing switched the other way, alternating step by step, and
the ratio of the best times is printed (on a shared machine the best of several and the
CPU time are the least disturbed by other processes).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from glsmamba.engine.trainer import heatmap_mse
from glsmamba.models import create_model
from glsmamba.preflight import profiler_peak_bytes as memory_peak  # noqa: F401 (used below and by tests)

GIB = 2 ** 30


def make_batch(model, batch: int, device):
    width, height = model.input_size
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(batch, model.num_frames, 3, height, width, generator=gen)
    w, h = model.heatmap_size
    heatmaps = torch.rand(batch, model.num_joints, h, w, generator=gen)
    weights = torch.ones(batch, model.num_joints)
    return clip.to(device), heatmaps.to(device), weights.to(device)


def autocast(device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train_step(model, optimizer, batch, device, bf16: bool) -> float:
    clip, heatmaps, weights = batch
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, bf16):
        out = model(clip)
    loss = heatmap_mse(out, heatmaps, weights)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def profiled(fn, device) -> tuple[int, int | None]:
    """(profiler peak bytes, CUDA max_memory_allocated above the start or None)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    cuda_base = None
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    with profile(activities=activities, profile_memory=True) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    cuda_peak = None
    if device.type == "cuda":
        cuda_peak = torch.cuda.max_memory_allocated() - cuda_base
    return memory_peak(prof, device.type), cuda_peak


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or CUDA)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="model.set_grad_checkpointing(True)")
    parser.add_argument("--compare", action="store_true",
                        help="also time the step without checkpointing in the same run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed steps per setting (0 = memory only)")
    parser.add_argument("--time-only", action="store_true",
                        help="skip the profiled steps (timing only)")
    parser.add_argument("--project", type=int, default=32, help="batch size to project to")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.preset).to(device)
    model.train()
    if args.checkpointing:
        model.set_grad_checkpointing(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    batch = make_batch(model, args.batch, device)
    step = lambda: train_step(model, optimizer, batch, device, args.bf16)  # noqa: E731

    step()  # warm-up: AdamW state, kernel build, path caches
    peak = encoder_peak = 0
    cuda_peak = None
    if not args.time_only:
        peak, cuda_peak = profiled(step, device)

        def encode():
            with torch.no_grad(), autocast(device, args.bf16):
                model.encode(batch[0])
        encoder_peak, _ = profiled(encode, device)

    times = {args.checkpointing: []}
    if args.compare:
        times[not args.checkpointing] = []
    for _ in range(args.repeats):
        for flag in times:
            if hasattr(model, "set_grad_checkpointing"):
                model.set_grad_checkpointing(flag)
            times[flag].append(timed(step, device))
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(args.checkpointing)

    weights = tensor_bytes(model.parameters()) + tensor_bytes(model.buffers())
    grads = tensor_bytes(params)
    adam = tensor_bytes(t for s in optimizer.state.values() for t in s.values()
                        if torch.is_tensor(t) and t.dim() > 0)
    per_clip = peak / args.batch
    activations = max(peak - grads, 0) / args.batch
    projected = weights + adam + grads + args.project * activations
    mode = f"{'bf16 autocast' if args.bf16 else 'fp32'}, " \
           f"{'checkpointing' if args.checkpointing else 'no checkpointing'}"
    print(f"{args.preset}: batch {args.batch}, {mode}, {device}, "
          f"{torch.get_num_threads()} threads")
    if not args.time_only:
        print(f"  step peak (profiler, live tensors above weights + AdamW state): "
              f"{peak / GIB:.3f} GiB = {per_clip / GIB:.3f} GiB/clip")
        if cuda_peak is not None:
            print(f"  step peak (torch.cuda.max_memory_allocated): {cuda_peak / GIB:.3f} GiB = "
                  f"{cuda_peak / args.batch / GIB:.3f} GiB/clip")
        print(f"  frozen-encoder transient (no-grad forward): "
              f"{encoder_peak / args.batch / GIB:.3f} GiB/clip")
    for flag, values in times.items():
        if not values:
            continue
        label = "checkpointing" if flag else "no checkpointing"
        wall, cpu = [v[0] for v in values], [v[1] for v in values]
        print(f"  step time ({label}): wall median {statistics.median(wall):.2f} s, best "
              f"{min(wall):.2f} s ({', '.join(f'{v:.2f}' for v in wall)}); process CPU time "
              f"best {min(cpu):.2f} s ({', '.join(f'{v:.2f}' for v in cpu)})")
    if args.compare and args.repeats:
        for what, index in (("wall, best", 0), ("CPU time, best", 1)):
            ratio = min(v[index] for v in times[True]) / min(v[index] for v in times[False])
            print(f"  checkpointing / plain step time ({what} of {args.repeats}): {ratio:.3f} "
                  f"({(ratio - 1) * 100:+.1f} %)")
    if args.time_only:
        return
    print(f"  projected peak at batch {args.project}: {projected / GIB:.2f} GiB = weights "
          f"{weights / GIB:.2f} + AdamW state {adam / GIB:.2f} + grads {grads / GIB:.2f} + "
          f"{args.project} x {activations / GIB:.3f} GiB/clip activations "
          f"(encoder transient {args.project * encoder_peak / args.batch / GIB:.2f} GiB "
          f"at that batch)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
