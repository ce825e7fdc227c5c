"""Throughput, memory and hardware efficiency of Glow under a profile's configuration.

Prints, for the chosen profile's CIFAR-10 Glow (``cpu`` by default):

- training images/s (forward + backward + Adamax step, batch of the profile),
- evaluation images/s (forward only, no grad, batch 256),
- peak resident memory of this process (CPU) or peak allocated GPU memory,
- the model's FLOPs per image (counted by ``torch.utils.flop_counter``: convolutions and
  matrix products, multiply-add = 2 FLOPs) and the achieved FLOP/s,
- this machine's fp32 peak, *measured in the same run* with a large matrix product, and the
  fraction of it that training and evaluation reach.

Run: ``python benchmarks/bench_glow.py [--profile cpu] [--dataset cifar10] [--seconds 20]``.
The figures are for this machine and this moment: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ood_lib import profiles, registry
from ood_lib.models.glow import Glow, GlowConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, seconds: float) -> float:
    """Seconds per call of ``fn``: one warm-up call, then as many as fit in ``seconds``."""
    fn()
    _sync(device)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or calls < 3:
        fn()
        calls += 1
    _sync(device)
    return (time.perf_counter() - t0) / calls


def matmul_peak(device: torch.device, seconds: float, n: int = 2048) -> float:
    """Achieved fp32 FLOP/s of an ``n x n`` matrix product (2 n^3 FLOPs): the practical peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, device, seconds)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=profiles.PROFILES)
    parser.add_argument("--dataset", default="cifar10", choices=sorted(profiles.PAIRS))
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per figure")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cfg = registry.model_config("glow", args.dataset, args.profile)
    tc = registry.train_config("glow", args.dataset, args.profile)
    model = Glow(GlowConfig(**cfg)).to(device)
    optimizer = torch.optim.Adamax(model.parameters(), lr=tc.lr)
    shape = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    x_train = (torch.rand(tc.batch_size, *shape, device=device) - 0.5)
    x_eval = (torch.rand(256, *shape, device=device) - 0.5)
    model.log_prob_parts(x_train)  # actnorm initialisation

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.train_loss(x_train).backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step() -> None:
        model.log_prob_parts(x_eval)

    peak = matmul_peak(device, args.seconds / 2)
    train_flops = count_flops(lambda: model.train_loss(x_train).backward())
    eval_flops = count_flops(eval_step)
    t_train = timed(train_step, device, args.seconds)
    t_eval = timed(eval_step, device, args.seconds)

    rows = [
        ("device", f"{device} ({torch.get_num_threads()} threads)"),
        ("config", f"Glow {args.dataset} {args.profile}: L={cfg['levels']} K={cfg['steps']} "
                   f"hidden={cfg['hidden']}, {sum(p.numel() for p in model.parameters()):,} params"),
        ("fp32 matmul peak", f"{peak / 1e9:.1f} GFLOP/s (measured, 2048x2048)"),
        ("train", f"{tc.batch_size / t_train:.1f} images/s (batch {tc.batch_size})"),
        ("train FLOPs/image", f"{train_flops / tc.batch_size / 1e9:.3f} GFLOP (fwd+bwd)"),
        ("train fraction of peak", f"{train_flops / t_train / peak:.1%}"),
        ("eval", f"{256 / t_eval:.1f} images/s (batch 256)"),
        ("eval FLOPs/image", f"{eval_flops / 256 / 1e9:.3f} GFLOP"),
        ("eval fraction of peak", f"{eval_flops / t_eval / peak:.1%}"),
        ("peak memory", f"{peak_memory_mib(device):.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
