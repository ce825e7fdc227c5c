"""Seconds per training step of PixelCNN and VAE architecture variants, on one thread.

For each variant: forward + backward + Adamax step at batch 64 on random CIFAR-sized uint8
images (3 x 32 x 32), ``--warmup`` untimed steps, then up to ``--steps`` timed ones (at least
3, fewer than ``--steps`` once ``--budget`` seconds are spent: the whole run stays near a
minute); prints the median and the fastest step, and the parameter count. The variants:

- PixelCNN: the ``cpu`` size with its 256-way softmax; the same network with a discretized
  logistic mixture head (K = 5, K = 10); deeper, wider mixture networks (6 and 8 layers of 32
  maps), the first costing about what the softmax ``cpu`` model costs;
- VAE: the ``cpu`` size (global 64-d latent) against spatial latents with residual blocks.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_families_arch.py [--steps 10] [--only vae]``.
The figures are for this machine and this moment (other jobs on it slow every step alike):
compare variants of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ood_lib.models.base import DensityModel
from ood_lib.models.pixelcnn import SIZES as PIXELCNN_SIZES
from ood_lib.models.pixelcnn import PixelCNN, PixelCNNConfig
from ood_lib.models.vae import SIZES as VAE_SIZES
from ood_lib.models.vae import VAE, VAEConfig

SHAPE = (3, 32, 32)
PIXELCNN_CPU = PIXELCNN_SIZES[("cpu", "rgb")]
VAE_CPU = VAE_SIZES[("cpu", "rgb")]

# name -> (family, config keyword arguments besides in_channels and image_size)
VARIANTS: dict[str, tuple[str, dict]] = {
    "pixelcnn cpu, softmax": ("pixelcnn", PIXELCNN_CPU),
    "pixelcnn cpu, mixture K=5": ("pixelcnn", {**PIXELCNN_CPU, "mixtures": 5}),
    "pixelcnn cpu, mixture K=10": ("pixelcnn", {**PIXELCNN_CPU, "mixtures": 10}),
    "pixelcnn h32 l6, mixture K=5": ("pixelcnn", {**PIXELCNN_CPU, "hidden": 32, "layers": 6,
                                                  "mixtures": 5}),
    "pixelcnn h32 l8, mixture K=5": ("pixelcnn", {**PIXELCNN_CPU, "hidden": 32, "layers": 8,
                                                  "mixtures": 5}),
    "vae cpu, global 64-d": ("vae", VAE_CPU),
    "vae h32 32x8x8, 2 res blocks": ("vae", {**VAE_CPU, "hidden": 32, "latent": 32,
                                             "latent_stride": 4, "res_blocks": 2}),
    "vae h32 8x16x16, 2 res blocks": ("vae", {**VAE_CPU, "hidden": 32, "latent": 8,
                                              "latent_stride": 2, "res_blocks": 2}),
    "vae h64 16x8x8, 1 res block": ("vae", {**VAE_CPU, "latent": 16, "latent_stride": 4,
                                            "res_blocks": 1}),
}


def build(family: str, kwargs: dict) -> DensityModel:
    torch.manual_seed(0)
    if family == "pixelcnn":
        return PixelCNN(PixelCNNConfig(in_channels=SHAPE[0], image_size=SHAPE[1], **kwargs))
    return VAE(VAEConfig(in_channels=SHAPE[0], image_size=SHAPE[1], **kwargs))


def step_times(
    model: DensityModel, batch: torch.Tensor, warmup: int, steps: int, budget: float
) -> list[float]:
    """Wall seconds of each timed training step: ``warmup`` untimed steps, then ``steps`` timed
    ones, or fewer (at least 3) once they have taken ``budget`` seconds."""
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    times: list[float] = []
    for n in range(warmup + steps):
        start = time.perf_counter()
        loss = model.train_loss(batch, g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if n >= warmup:
            times.append(time.perf_counter() - start)
            if len(times) >= 3 and sum(times) > budget:
                break
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget", type=float, default=4.0,
                        help="seconds of timed steps per variant before stopping early")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--only", help="run the variants whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (args.batch, *SHAPE), generator=g, dtype=torch.uint8)
    print(f"batch {args.batch} x {SHAPE}, {torch.get_num_threads()} thread(s), {args.warmup} "
          f"warm-up + up to {args.steps} timed steps ({args.budget:g} s budget) per variant")
    for name, (family, kwargs) in VARIANTS.items():
        if args.only and args.only not in name:
            continue
        model = build(family, kwargs)
        times = step_times(model, batch, args.warmup, args.steps, args.budget)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name:>32}: {statistics.median(times):6.3f} s/step median, {min(times):6.3f} "
              f"min of {len(times):2d}, {n_params / 1e6:5.2f} M parameters", flush=True)


if __name__ == "__main__":
    main()
