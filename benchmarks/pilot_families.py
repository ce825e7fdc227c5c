"""Pilot runs: which PixelCNN and VAE architecture to train on CIFAR-10 for the cpu profile.

Each pilot trains one architecture variant (``VARIANTS`` of ``bench_families_arch.py``) on
the CIFAR-10 training split (45,000 images, the held-out split excluded) for a fixed budget of
process CPU time on one thread: its step count is the budget over the variant's measured CPU
seconds per step, with the cpu profile's optimisation (batch 64, Adamax lr 1e-3, 200 warm-up steps) and the
cosine decay the full run will use. It is judged on the held-out split ``cifar10_val`` (first
``--val-images`` images): never on a test split, since the choice is a fitted hyperparameter.

Writes ``<out>/<variant>/log.csv`` (the training loop's log: ``cifar10_val_bpd`` against
``cpu_s``) and ``<out>/<variant>/pilot.json`` (variant, step time, steps, final held-out
bits/dim, CPU seconds, parameter count), and prints the last line.

Run: ``OMP_NUM_THREADS=1 python benchmarks/pilot_families.py --variant "pixelcnn h32 l6,
mixture K=5" --minutes 20``. The figures hold for this machine at this moment (another job on
the same core slows a pilot's steps, not its CPU seconds): compare pilots by CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_families_arch import SHAPE, VARIANTS, build, step_times

from ood_lib.data import store
from ood_lib.training.loop import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--minutes", type=float, default=20.0, help="CPU minutes of training")
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--evals", type=int, default=5, help="held-out evaluations in the run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/pilots"))
    parser.add_argument("--data-root")
    args = parser.parse_args()
    torch.set_num_threads(1)
    family, kwargs = VARIANTS[args.variant]
    train_x = store.load("cifar10", "train", args.data_root).tensor()
    val_x = store.load_named("cifar10_val", args.data_root).tensor()[: args.val_images]
    assert tuple(train_x.shape[1:]) == SHAPE

    # Process CPU seconds per step on real images (wall time would count other jobs on the
    # machine), then the step count that fills the budget.
    probe = build(family, kwargs)
    start = time.process_time()
    n_timed = len(step_times(probe, probe.inputs(train_x[:64]), 2, 10, 30.0))
    seconds = (time.process_time() - start) / (2 + n_timed)
    steps = max(int(args.minutes * 60 / seconds), 2 * args.evals)
    every = steps // args.evals
    cfg = TrainConfig(steps=steps, batch_size=64, warmup_steps=200, eval_every=every,
                      eval_images=args.val_images, checkpoint_every=every, lr_schedule="cosine")
    out = args.out / args.variant.replace(" ", "_").replace(",", "").replace("=", "")
    model = build(family, kwargs)
    result = train(model, train_x, cfg, out, monitor={"cifar10_val": val_x})
    last = result.log[-1]
    summary = {"variant": args.variant, "family": family, "config": kwargs,
               "step_s": round(seconds, 4), "steps": steps, "cpu_s": round(result.cpu_s, 1),
               "wall_s": round(result.wall_s, 1), "val_images": args.val_images,
               "cifar10_val_bpd": round(last["cifar10_val_bpd"], 4),
               "train_bpd": round(last["train_bpd"], 4),
               "n_params": sum(p.numel() for p in model.parameters())}
    (out / "pilot.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
