"""Evaluation with and without the allocator settings of :mod:`ood_lib.allocator`.

Scores the first ``--images`` SVHN test images with the shipped cpu CIFAR-10 Glow at batch 256,
once in a process with glibc's defaults (``OOD_GLIBC_MALLOC_DEFAULTS=1``) and once with the
settings ``ood_lib`` applies at import, alternating ``--rounds`` times, and prints images/s,
system time and minor page faults of each, and whether the bits/dim are identical.

Run: ``python benchmarks/bench_allocator.py [--images 2560] [--threads 2] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
import torch
from ood_lib import allocator
from ood_lib.data import store
from ood_lib.models.base import evaluate
from ood_lib.zoo import registry
torch.set_num_threads(int(sys.argv[2]))
model = registry.get("glow", "cifar10", "cpu").model
x = store.load("svhn", "test").subset(int(sys.argv[1])).tensor()
evaluate(model, x[:256])  # warm-up
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
bpd = evaluate(model, x)["bpd"]
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"active": allocator.ACTIVE, "images_per_s": len(x) / wall, "wall_s": wall,
                  "sys_s": r1.ru_stime - r0.ru_stime, "minor_faults": r1.ru_minflt - r0.ru_minflt,
                  "mean_bpd": float(bpd.mean())}))
"""


def run(defaults: bool, images: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OOD_GLIBC_MALLOC_DEFAULTS": "1" if defaults else "0"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(images), str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        for defaults in (True, False):
            r = run(defaults, args.images, args.threads)
            rows.append(r)
            print(f"{'glibc defaults' if defaults else 'ood_lib settings':>16}: "
                  f"{r['images_per_s']:7.1f} images/s, {r['wall_s']:6.2f} s wall, "
                  f"{r['sys_s']:5.2f} s system, {r['minor_faults']:>9,} minor faults, "
                  f"mean bpd {r['mean_bpd']:.6f}", flush=True)
    same = len({r["mean_bpd"] for r in rows}) == 1
    print(f"bits/dim identical in every run: {same}")


if __name__ == "__main__":
    main()
