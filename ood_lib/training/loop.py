r"""The one training loop of the book, for every model family: maximum likelihood in bits/dim.

Each step draws a batch, prepares it for the model (a flow gets it dequantized with fresh
uniform noise; a discrete model gets the integer levels, see :mod:`ood_lib.models.base`) and
minimises the model's ``train_loss``: the mean bits/dim, or a bound on it (a VAE's negative
ELBO). Around that:

- Adam or Adamax with a linear learning-rate warm-up, then a constant rate or a cosine decay
  to zero at the last step (``lr_schedule``);
- gradient-norm clipping;
- optionally, a background model's perturbation: a fraction ``noise_fraction`` of the
  subpixels of every batch replaced by uniform noise (:func:`ood_lib.transforms.corrupt`);
- optionally, an L2 penalty on the kernel weights (``l2``, :func:`l2_penalty`), as Ren et al.
  (2019) train their background models: Keras's ``l2(lambda)`` adds
  $\lambda \sum_w w^2$ to a loss in nats per image; ours is in bits/dim, a loss in nats per
  image divided by $D \ln 2$ ($D$ subpixels), so the same penalty enters as

  $$\mathcal L = \text{bpd} + \frac{\lambda \sum_w w^2}{D \ln 2} ;$$
- a guard: a step whose loss or gradient norm is not finite is skipped (no update) and
  counted in ``n_skipped``; a long run of them in a row means the weights themselves are
  broken, and training stops with :class:`TrainingDiverged` instead of skipping forever;
- a log row every ``eval_every`` steps: wall time, process CPU time (``cpu_s``: under
  contention wall time is not compute) and torch's thread count (a run resumed with another
  one says so), running train bits/dim and the deterministic
  bits/dim of each *monitored* set (held-out in-distribution data and the OOD set, so later
  chapters can plot likelihood over training, the paper's Figure 5);
- a checkpoint every ``checkpoint_every`` steps and exact resume: batch order and noise are
  functions of ``(seed, step)`` alone, so a resumed run is bit-identical to an uninterrupted one;
- data parallelism: under ``torchrun`` with N processes each step's global batch is split over
  them, with noise drawn for the global batch, so the weights do not depend on N (to float
  rounding); see :mod:`ood_lib.training.distributed`. Alone, the loop is the one-process loop.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ood_lib.models.base import DensityModel, evaluate
from ood_lib.training import distributed
from ood_lib.transforms import corrupt


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamax"
    warmup_steps: int = 200
    max_grad_norm: float = 50.0
    n_bits: int = 8
    eval_every: int = 500
    eval_images: int = 512
    checkpoint_every: int = 500
    init_batch_size: int = 256
    # Fraction of subpixels replaced by uniform noise in every training batch (a background
    # model for the likelihood ratio, :func:`ood_lib.transforms.corrupt`); 0: the data as is.
    noise_fraction: float = 0.0
    # "constant": lr after warm-up; "cosine": lr * (1 + cos(pi t)) / 2, t from 0 at the end of
    # warm-up to 1 at the last step.
    lr_schedule: str = "constant"
    # lambda of the L2 penalty on the kernel weights (:func:`l2_penalty`; Ren et al.'s
    # background models); 0: none, as every model trained before it existed.
    l2: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamax"):
            raise ValueError(f"optimizer must be 'adam' or 'adamax', got {self.optimizer!r}")
        if min(self.steps, self.batch_size, self.eval_every, self.checkpoint_every) < 1:
            raise ValueError(f"steps, batch_size and intervals must be positive: {self}")
        if not 0.0 <= self.noise_fraction < 1.0:
            raise ValueError(f"noise_fraction must be in [0, 1), got {self.noise_fraction}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not self.l2 >= 0.0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")

    def to_dict(self) -> dict:
        """The fields, ``noise_fraction``, ``lr_schedule`` and ``l2`` only when not at their
        defaults: they are hashed into checkpoint keys, and the keys of models trained without
        them predate them."""
        d = asdict(self)
        if not self.noise_fraction:
            del d["noise_fraction"]
        if not self.l2:
            del d["l2"]
        if self.lr_schedule == "constant":
            del d["lr_schedule"]
        return d

    def lr_at(self, step: int) -> float:
        """The learning rate of (0-based) ``step``: linear warm-up, then the schedule."""
        warm = min(1.0, (step + 1) / self.warmup_steps)
        if self.lr_schedule == "constant" or step < self.warmup_steps:
            return self.lr * warm
        t = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@dataclass
class TrainResult:
    steps: int
    n_skipped: int
    wall_s: float
    cpu_s: float  # process CPU time over every leg of the run
    log: list[dict[str, float]]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps: the parameters themselves have gone bad."""


# A run of this many non-finite steps in a row cannot be skipped away: stop with an error.
MAX_CONSECUTIVE_SKIPS = 25
STATE_FILE = "train_state.pt"
LOG_FILE = "log.csv"


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> Tensor:
    """Indices of the batch at ``step``: epoch ``e`` visits ``randperm(n, seed, e)`` in order."""
    per_epoch = n // batch_size
    epoch, i = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[i * batch_size : (i + 1) * batch_size]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The dequantization-noise generator of one step (reseeded per step: exact resume)."""
    return torch.Generator().manual_seed(seed * 7_919 + step + 1)


def kernel_weights(model: nn.Module) -> list[Tensor]:
    r"""The weights an L2 penalty counts, as Keras's ``kernel_regularizer`` does: the kernel
    (``weight``) of every convolution and linear layer (``nn.Conv2d`` and its subclasses,
    ``nn.ConvTranspose2d``, ``nn.Linear``); never a bias, nor any other parameter. Per family:

    - Glow: the convolutions of every coupling network and split prior, the zero-initialised
      last ones included (their raw kernel; the learned output scale $e^{3s}$ is not a
      kernel). Not counted: actnorm, the invertible 1x1 convolutions (a bijection's matrix, not
      a layer's kernel) and the learned top prior.
    - PixelCNN: every masked convolution, as the product of its kernel and its fixed 0/1 mask
      (a masked-out tap is no weight of the model).
    - VAE: every convolution, transposed convolution and linear layer of encoder and decoder.
    """
    kernels = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            mask = getattr(module, "mask", None)  # PixelCNN's masked convolutions carry one
            kernels.append(module.weight if mask is None else module.weight * mask)
    return kernels


def l2_penalty(model: nn.Module, l2: float, n_dims: int) -> Tensor:
    r"""Keras's ``l2(lambda)`` penalty, $\lambda \sum_w w^2$ over :func:`kernel_weights`, in
    nats per image, expressed in bits/dim: $\lambda \sum_w w^2 / (D \ln 2)$, with
    $D$ = ``n_dims`` subpixels (a scalar tensor, differentiable in the weights)."""
    squares = sum(w.square().sum() for w in kernel_weights(model))
    # lambda sum_w w^2 / (D ln 2)
    return l2 * squares / (n_dims * math.log(2.0))


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.Adamax if cfg.optimizer == "adamax" else torch.optim.Adam
    return cls([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    if not rows:
        return
    tmp = path.with_suffix(".tmp")
    columns = list(dict.fromkeys(k for row in rows for k in row))  # rows of older code lack some
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def train(
    model: DensityModel,
    train_x: Tensor,
    cfg: TrainConfig,
    out_dir: Path,
    seed: int = 0,
    monitor: dict[str, Tensor] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on uint8 images ``train_x`` ``[N, C, H, W]``, resuming from
    ``out_dir/train_state.pt`` if present. ``monitor`` maps names to uint8 image sets scored
    at each log row (first ``cfg.eval_images`` images). ``stop_at`` ends the run early at that
    step after checkpointing (used to test resumption and to split long runs).

    Under ``torchrun`` (N > 1 processes, :func:`ood_lib.training.distributed.setup`) every rank calls
    this with the same arguments; ``cfg.batch_size`` is the global batch and must divide by N.
    Rank 0 alone evaluates ``monitor``, writes the log and checkpoints; the returned ``log`` is
    complete on rank 0 only."""
    if model.n_bits != cfg.n_bits:
        raise ValueError(f"model is built for {model.n_bits}-bit images, config says {cfg.n_bits}")
    out_dir.mkdir(parents=True, exist_ok=True)
    monitor = {k: v[: cfg.eval_images] for k, v in (monitor or {}).items()}
    if len(train_x) < cfg.batch_size:
        raise ValueError(f"{len(train_x)} training images < batch size {cfg.batch_size}")
    replicas = distributed.current()
    replicas.check_batch(cfg.batch_size)
    device = next(model.parameters()).device
    optimizer = _make_optimizer(model, cfg)
    state_path = out_dir / STATE_FILE
    counters = {"step": 0, "n_skipped": 0, "in_a_row": 0, "wall_s": 0.0, "cpu_s": 0.0,
                "running": 0.0, "n_running": 0, "grad_norm": float("nan")}
    log: list[dict[str, float]] = []
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        counters, log = state["counters"], state["log"]
    else:  # data-dependent initialisation (actnorm) on a random batch (the same on every rank)
        pick = torch.randperm(len(train_x), generator=step_generator(seed, -1))[: cfg.init_batch_size]
        init = model.inputs(train_x[pick], generator=step_generator(seed, -2))
        with torch.no_grad():
            model.log_prob_parts(init.to(device))
    step, n_skipped, in_a_row = counters["step"], counters["n_skipped"], counters["in_a_row"]
    wall_s = counters["wall_s"]
    cpu_s = counters.get("cpu_s", 0.0)  # states saved before cpu_s was logged lack it
    running, n_running, grad_norm = counters["running"], counters["n_running"], counters["grad_norm"]

    def save_state() -> None:
        counters.update(step=step, n_skipped=n_skipped, in_a_row=in_a_row, wall_s=wall_s,
                        cpu_s=cpu_s, running=running, n_running=n_running, grad_norm=grad_norm)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "counters": counters, "log": log}
        torch.save(state, out_dir / (STATE_FILE + ".tmp"))
        (out_dir / (STATE_FILE + ".tmp")).replace(state_path)

    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    model.train()
    step_loss = replicas.step_loss(model)  # model.train_loss, or its DDP wrapper
    t0, c0 = time.perf_counter(), time.process_time()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or not replicas.is_main,
               desc="train", unit="step")
    while step < end:
        idx = batch_indices(len(train_x), step, cfg.batch_size, seed)
        g = step_generator(seed, step)
        batch = train_x[idx]
        if cfg.noise_fraction:  # a background model's input: part of every image is noise
            batch = corrupt(batch, cfg.noise_fraction, g)
        # the global batch, dequantized as by one process; this rank's rows of it
        x = replicas.shard(model.inputs(batch, generator=g)).to(device)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        loss = step_loss(x, g)
        penalty = 0.0
        if cfg.l2:
            penalty_term = l2_penalty(model, cfg.l2, x[0].numel())
            # L = bpd + lambda sum_w w^2 / (D ln 2)
            loss, penalty = loss + penalty_term, float(penalty_term.detach())
        optimizer.zero_grad(set_to_none=True)
        loss_value, loss_finite = replicas.mean_if_finite(loss)  # agreed by every rank
        if loss_finite:
            loss.backward()
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        if loss_finite and replicas.all_finite(grad_norm):
            optimizer.step()
            # the running train bpd is the likelihood term alone, without the penalty
            running, n_running, in_a_row = running + loss_value - penalty, n_running + 1, 0
        else:
            n_skipped, in_a_row = n_skipped + 1, in_a_row + 1
            if in_a_row >= MAX_CONSECUTIVE_SKIPS:
                raise TrainingDiverged(
                    f"{in_a_row} non-finite steps in a row up to step {step + 1}: the model has "
                    f"diverged; lower lr ({cfg.lr}) or lengthen warm-up ({cfg.warmup_steps} steps)."
                    f" The last good checkpoint is {state_path} (delete it to restart).")
        step += 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if replicas.is_main:  # rank 0 alone scores the monitored sets and keeps the log
                row = {"step": step, "epoch": step * cfg.batch_size / len(train_x),
                       "train_bpd": running / max(n_running, 1)}
                for name, xs in monitor.items():
                    row[f"{name}_bpd"] = float(evaluate(model, xs)["bpd"].mean())
                model.train()
                if cfg.l2:  # the penalty (bits/dim) of the row's last step
                    row["l2_penalty"] = penalty
                row.update(lr=optimizer.param_groups[0]["lr"], grad_norm=grad_norm,
                           n_skipped=n_skipped, wall_s=wall_s + time.perf_counter() - t0,
                           cpu_s=cpu_s + time.process_time() - c0,
                           threads=torch.get_num_threads())
                log.append(row)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("_bpd")})
            running, n_running = 0.0, 0
        if step % cfg.checkpoint_every == 0 or step == end:
            wall_s, t0 = wall_s + time.perf_counter() - t0, time.perf_counter()
            cpu_s, c0 = cpu_s + time.process_time() - c0, time.process_time()
            if replicas.is_main:
                save_state()
                _write_log(out_dir / LOG_FILE, log)
            replicas.barrier()  # the checkpoint is on disk before any rank goes on
    bar.close()
    return TrainResult(steps=step, n_skipped=n_skipped, wall_s=wall_s, cpu_s=cpu_s, log=log)
