"""Glow's speed against the previous model code, in the same run, and its share of the fp32 peak.

For the chosen profile's Glow (``cpu`` CIFAR-10 by default) this builds two models with the
same weights: the current :class:`ood_lib.models.glow.Glow` and the model code as it was at
commit :data:`BASELINE_COMMIT` (``ood_lib/glow.py`` there, read with ``git show``; without the
git history the benchmark says so and stops). It checks that both give the same
log-likelihoods on real images, then alternates rounds, ``A B B A`` so that drift in the
machine's load hits both alike, of

- training: forward + backward + Adamax step on a batch of the profile (images/s);
- evaluation: forward without gradients on a batch of 256 (images/s);

and prints, for each, the median images/s of both codes, the median of the per-round ratio
current / baseline and its spread (min, quartiles, max over rounds), and the share of the
machine's fp32 peak that the current code reaches. FLOPs are counted with
``torch.utils.flop_counter`` (convolutions and matrix products, multiply-add = 2); the peak is
the faster of a 2048 x 2048 matrix product and a 1x1 convolution (:func:`fp32_peak`),
measured in the same run between rounds. Also: peak memory.

With ``--check-shipped`` it instead scores the paper's three sets (train, test, OOD partner;
the book's ``cpu`` coverage) with every shipped Glow and constant-volume Glow (ensemble members
and background models included) under both codes
and prints the largest bits/dim difference per model and set (the speed work must keep it
below 1e-5).

It always prints the machine (CPU model and vector flags, threads, affinity); with
``--diagnose`` also oneDNN's primitives and layout reorders per training step, the time per layer
kind and the top operators, and the speed under each setting tried (``glow_diagnostics.py``).

Run: ``python benchmarks/bench_glow.py [--profile cpu] [--dataset cifar10] [--rounds 8]
[--diagnose]``.
The figures are for this machine and this moment; the ratio is robust to load that changes
slowly, the share of peak is not: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import glow_diagnostics
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ood_lib import catalogue, paths
from ood_lib.data import image_sets, store
from ood_lib.models.base import evaluate
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.paths import PROJECT_ROOT
from ood_lib.zoo import families, registry

# The model code that issue 9 measured ("today's Glow"), before any speed work.
BASELINE_COMMIT = "5354753"
BASELINE_PATH = "ood_lib/glow.py"


def load_baseline() -> object:
    """The Glow module as it was at :data:`BASELINE_COMMIT`, imported from ``git show``."""
    try:
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:{BASELINE_PATH}"],
                                cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"bench_glow: the git history with commit {BASELINE_COMMIT} is missing here "
                 f"({exc}); the same-run comparison needs it (clone the repository, not an "
                 f"archive). Stopping.")
    path = Path(tempfile.mkdtemp()) / "glow_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("glow_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["glow_baseline"] = module
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls (after one warm-up call)."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls


def fp32_peak(device: torch.device, calls: int = 10) -> dict[str, float]:
    """Achieved fp32 FLOP/s of two dense kernels; the larger is the practical peak:

    - ``matmul``: a 2048 x 2048 matrix product (2 n^3 FLOPs; BLAS, e.g. MKL);
    - ``conv``: a 1x1 convolution, 512 -> 512 channels on a batch of 32 images of 32 x 32,
      channels-last: a matrix product run by oneDNN, the library the models' convolutions run
      in (1x1, so no Winograd or FFT algorithm can do fewer multiplications than counted).

    One library can reach much more of the hardware than the other (seen here: on a 2-core
    AMD EPYC with full-width AVX-512, MKL's matrix product ran at 200 GFLOP/s and oneDNN's at
    470), so a share of peak taken from the matrix product alone can exceed 100%."""
    n, c = 2048, 512
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x = torch.randn(32, c, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(c, c, 1, bias=False).to(device, memory_format=torch.channels_last)
    with torch.no_grad():
        return {"matmul": 2 * n**3 / timed(lambda: a @ b, device, calls),
                "conv": 2 * 32 * 32 * 32 * c * c / timed(lambda: conv(x), device, calls)}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def _spread(ratios: list[float]) -> str:
    q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
    return (f"median {q2:.2f}x (min {min(ratios):.2f}, quartiles {q1:.2f}-{q3:.2f}, "
            f"max {max(ratios):.2f}; {len(ratios)} rounds)")


def check_shipped(baseline: object, data_root: str | None) -> None:
    """Largest |bits/dim| difference between the two codes, per shipped Glow and paper set."""
    worst = 0.0
    manifest = json.loads((paths.checkpoints_dir() / "manifest.json").read_text())
    for record in manifest.values():
        if record["model"] not in ("glow", "glow_cv") or record["profile"] != "cpu":
            continue
        trained = registry.get(record["model"], record["dataset"], "cpu", record["seed"],
                               data_root, allow_training=False,
                               noise_fraction=record["train_config"].get("noise_fraction", 0.0))
        old = baseline.Glow(baseline.GlowConfig(**trained.spec.model_config))
        old.load_state_dict(trained.model.state_dict())
        for s in image_sets.paper_sets(record["dataset"], "cpu", data_root):
            new_bpd = evaluate(trained.model, s.images)["bpd"]
            with torch.no_grad():
                old_lp = np.concatenate([
                    old.log_prob_parts(trained.model.inputs(s.images[i : i + 256]))["log_px"]
                    .double().numpy() for i in range(0, s.n, 256)])
            old_bpd = trained.model.bits_per_dim(old_lp, s.images[0].numel())
            diff = float(np.abs(new_bpd - old_bpd).max())
            worst = max(worst, diff)
            print(f"{trained.key:<36} {s.label:<24} {s.n:>6,} images  max |d bpd| {diff:.1e}",
                  flush=True)
    print(f"largest difference: {worst:.1e} bits/dim ({'within' if worst < 1e-5 else 'ABOVE'} 1e-5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=catalogue.PROFILES)
    parser.add_argument("--dataset", default="cifar10", choices=sorted(catalogue.PAIRS))
    parser.add_argument("--rounds", type=int, default=8, help="A B B A rounds per figure")
    parser.add_argument("--train-calls", type=int, default=6, help="training steps per timing")
    parser.add_argument("--eval-calls", type=int, default=3, help="evaluation batches per timing")
    parser.add_argument("--data-root")
    parser.add_argument("--diagnose", action="store_true",
                        help="also print oneDNN's primitives and reorders per training step, the "
                             "time per layer kind and the speed under each setting tried "
                             "(glow_diagnostics.py; a few minutes)")
    parser.add_argument("--check-shipped", action="store_true",
                        help="compare the two codes' bits/dim on the shipped Glows instead")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    baseline = load_baseline()
    if args.check_shipped:
        check_shipped(baseline, args.data_root)
        return
    cfg = families.model_config("glow", args.dataset, args.profile)
    tc = families.train_config("glow", args.dataset, args.profile)
    images = store.load(args.dataset, "test", args.data_root).tensor()
    torch.manual_seed(0)
    current = Glow(GlowConfig(**cfg)).to(device)
    x_eval = current.inputs(images[:256], generator=torch.Generator().manual_seed(0)).to(device)
    x_train = x_eval[: tc.batch_size]
    with torch.no_grad():
        current.log_prob_parts(x_eval)  # actnorm initialisation on real images
    old = baseline.Glow(baseline.GlowConfig(**cfg)).to(device)
    old.load_state_dict(current.state_dict())
    models = {"baseline": old, "current": current}
    with torch.no_grad():
        lp = {k: m.log_prob_parts(x_eval)["log_px"] for k, m in models.items()}
    n_dims = x_eval[0].numel()
    max_diff = float((lp["current"] - lp["baseline"]).abs().max()) / (n_dims * np.log(2))
    optimizers = {k: torch.optim.Adamax(m.parameters(), lr=tc.lr) for k, m in models.items()}

    def train_step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        (-models[name].log_prob_parts(x_train)["log_px"].mean()).backward()
        optimizers[name].step()

    def eval_step(name: str) -> None:
        with torch.no_grad():
            models[name].log_prob_parts(x_eval)

    flops = {"train": count_flops(lambda: (-current.log_prob_parts(x_train)["log_px"].mean())
                                  .backward()),
             "eval": count_flops(lambda: eval_step("current"))}
    batch = {"train": tc.batch_size, "eval": len(x_eval)}
    calls = {"train": args.train_calls, "eval": args.eval_calls}
    steps = {"train": train_step, "eval": eval_step}
    speed = {(w, k): [] for w in steps for k in models}
    peaks = []
    for r in range(args.rounds):
        order = ("baseline", "current") if r % 2 == 0 else ("current", "baseline")
        for what, step in steps.items():
            for name in order + order[::-1]:  # A B B A
                t = timed(lambda n=name, s=step: s(n), device, calls[what])
                speed[(what, name)].append(batch[what] / t)
        peaks.append(fp32_peak(device))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{w} {k} {statistics.median(v[-2:]):.0f} img/s" for (w, k), v in speed.items()),
            flush=True)

    kernel = {k: statistics.median(p[k] for p in peaks) for k in peaks[0]}
    peak = max(kernel.values())
    rows = [
        ("device", f"{device} ({torch.get_num_threads()} threads), torch {torch.__version__}"),
        ("config", f"Glow {args.dataset} {args.profile}: L={cfg['levels']} K={cfg['steps']} "
                   f"hidden={cfg['hidden']}, {sum(p.numel() for p in current.parameters()):,} "
                   f"params"),
        ("baseline", f"ood_lib/glow.py at commit {BASELINE_COMMIT} (same weights)"),
        ("max |bpd difference|", f"{max_diff:.2e} on {len(x_eval)} {args.dataset} test images"),
        ("fp32 peak", f"{peak / 1e9:.1f} GFLOP/s (medians of {len(peaks)}: 2048x2048 matmul "
                      f"{kernel['matmul'] / 1e9:.1f}, 1x1 conv {kernel['conv'] / 1e9:.1f})"),
    ]
    for what in steps:
        # each round holds two timings per code (A B B A): pair them in order
        ratios = [c / b for c, b in zip(speed[(what, "current")], speed[(what, "baseline")],
                                        strict=True)]
        med = {k: statistics.median(speed[(what, k)]) for k in models}
        rows += [
            (f"{what} images/s", f"current {med['current']:.1f}, baseline {med['baseline']:.1f} "
                                 f"(batch {batch[what]})"),
            (f"{what} ratio current/baseline", _spread(ratios)),
            (f"{what} FLOPs/image", f"{flops[what] / batch[what] / 1e9:.3f} GFLOP"),
            (f"{what} share of fp32 peak", f"current {flops[what] * med['current'] / batch[what] / peak:.1%},"
                                          f" baseline {flops[what] * med['baseline'] / batch[what] / peak:.1%}"),
        ]
    rows.append(("peak memory", f"{peak_memory_mib(device):.0f} MiB (both models)"))
    rows = glow_diagnostics.machine() + rows
    if args.diagnose:
        rows += glow_diagnostics.layer_split(current, lambda: train_step("current"))
        rows += glow_diagnostics.onednn_summary() + glow_diagnostics.variants()
    print_rows(rows)


def print_rows(rows: list[tuple[str, str]]) -> None:
    """The benchmark's figures as an aligned two-column table."""
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
