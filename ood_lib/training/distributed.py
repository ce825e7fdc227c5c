r"""Data-parallel training on several processes (``torchrun``) that gives the one-process result.

The training loop (:func:`ood_lib.training.loop.train`) asks :func:`current` which process it is. Run
plainly, the answer is one process (``Replicas()``) and every method below is the identity or a
no-op: the loop is exactly the one-process loop. Launched by ``torchrun --nproc_per_node=N``
with ``N > 1``, :func:`setup` joins the process group (NCCL on GPUs, one GPU per process;
Gloo on CPUs) and each step is split over the N processes (*ranks*):

- every rank draws the same **global** batch of ``B`` images (``B`` = the profile's batch size,
  which must divide by N) and prepares it exactly as one process would, dequantization noise
  included (``model.inputs(train_x[idx], generator=g)``), then keeps its rows
  ``[r b, (r + 1) b)`` with ``b = B / N`` (:meth:`Replicas.shard`);
- noise a model draws *inside* ``train_loss`` from the step's generator (the VAE's
  reparameterisation noise) is also drawn for the global batch and sliced to the rank's rows
  (:class:`GlobalBatchNoise`), so each rank computes exactly its slice of the one-process loss;
- with equal shards the global mean loss is the mean over ranks of the shard means,

  $$\frac1B \sum_{i=1}^{B} \ell_i = \frac1N \sum_{r=1}^{N} \frac1b \sum_{i \in r} \ell_i,$$

  so DistributedDataParallel's averaging of gradients reproduces the one-process gradient (to
  float rounding) and the weights do not depend on N;
- the non-finite guard agrees: a step is skipped on every rank if the loss of *any* shard, or
  the (already averaged) gradient norm, is not finite (:meth:`Replicas.all_finite`);
- actnorm's data-dependent initialisation runs on the same init batch on every rank, and
  DistributedDataParallel broadcasts rank 0's parameters and buffers when it wraps the model;
- rank 0 alone scores the monitored sets, writes logs and checkpoints and shows the progress bar;
  the others wait at a barrier after each checkpoint. Resuming, every rank loads the state.

A run is therefore the same function of ``(seed, step)`` whatever N is; the checkpoint key
does not mention N. Exactness holds for every family of :mod:`ood_lib.models`: Glow and PixelCNN
draw no noise in ``train_loss``, the VAE draws per-image rows with ``torch.randn``. A future
family whose ``train_loss`` draws from the step generator in some other way (an in-place
``normal_``, ``torch.bernoulli`` on its activations) is refused under N > 1 with an error, not
silently trained with N-dependent noise. The processes of one run share a file system (one node).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ood_lib.models.base import DensityModel

# Rank 0 alone scores monitored sets, writes checkpoints and draws samples while the others
# wait at a barrier or in the next collective; the default timeout could cut a long wait short.
TIMEOUT = timedelta(hours=2)

StepLoss = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class Replicas:
    """This process's place among the ``world`` processes of a run (default: alone)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes files."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise ValueError(
                f"the global batch of {batch_size} images does not divide by {self.world} "
                f"processes: launch torchrun with a --nproc_per_node that divides {batch_size}")

    def shard(self, x: Tensor) -> Tensor:
        """This rank's rows of a global batch ``x`` ``[B, ...]``: ``[r b, (r + 1) b)``."""
        if self.world == 1:
            return x
        b = len(x) // self.world
        return x[self.rank * b : (self.rank + 1) * b]

    def step_loss(self, model: DensityModel) -> StepLoss:
        """``(x, g) -> loss`` of one step on this rank's shard ``x`` (g: the step's generator).
        One process: ``model.train_loss``. Several: the same through DistributedDataParallel
        (created here, after actnorm's initialisation), whose backward averages gradients."""
        if self.world == 1:
            return lambda x, g: model.train_loss(x, generator=g)
        # DDP warns when a gradient's strides differ from its parameter's even where only the
        # stride of a size-1 dimension differs (the VAE's first conv, [C, 1, k, k]): same layout.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        # The base class's train_loss draws no noise; an override may (the VAE's).
        draws = type(model).train_loss is not DensityModel.train_loss
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(
            _ShardLoss(model, self, draws),
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # buffers are fixed once actnorm is initialised
        )

    def _device(self) -> torch.device:
        return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")

    def mean_if_finite(self, loss: Tensor) -> tuple[float, bool]:
        """The global batch's mean loss (mean of the shards' means) and whether every shard's
        loss is finite, the same on every rank."""
        if self.world == 1:
            return loss.item(), bool(torch.isfinite(loss))
        value = loss.item()
        finite = math.isfinite(value)
        both = torch.tensor([value if finite else 0.0, float(finite)], dtype=torch.float64,
                            device=self._device())
        dist.all_reduce(both)  # sum over ranks
        total, n_finite = both.tolist()
        return total / self.world, n_finite == self.world

    def all_finite(self, value: float) -> bool:
        """Whether ``value`` is finite on every rank."""
        finite = math.isfinite(value)
        if self.world == 1:
            return finite
        flag = torch.tensor(float(finite), device=self._device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class _ShardLoss(nn.Module):
    """The module DistributedDataParallel wraps: its forward is one step's ``train_loss`` on
    this rank's shard (DDP only synchronises gradients of what runs through ``forward``)."""

    def __init__(self, model: DensityModel, replicas: Replicas, draws: bool) -> None:
        super().__init__()
        self.model, self.replicas, self.draws = model, replicas, draws

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if not self.draws:
            return self.model.train_loss(x, generator=generator)
        with GlobalBatchNoise(generator, self.replicas, len(x)):
            return self.model.train_loss(x, generator=generator)


class GlobalBatchNoise(TorchFunctionMode):
    """While active, a draw ``torch.randn / rand / randint(..., size, generator=generator)``
    whose first dimension is the shard size ``b`` (one row per image) is drawn for the global
    batch, ``(N b, ...)``, and this rank's rows are returned: the values, and the generator's
    state after the draw, are those of the one-process run. Draws of other shapes from
    ``generator`` (shared by every image) are left as they are, which is also exact: every rank
    holds the same generator state. Any other use of ``generator`` raises."""

    _SIZED = (torch.randn, torch.rand, torch.randint)

    def __init__(self, generator: torch.Generator, replicas: Replicas, shard_size: int) -> None:
        super().__init__()
        self.generator, self.replicas, self.b = generator, replicas, shard_size

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is not self.generator:
            return func(*args, **kwargs)
        if func not in self._SIZED:
            raise NotImplementedError(
                f"{getattr(func, '__name__', func)} draws from the step's generator inside "
                f"train_loss; under {self.replicas.world} processes only torch.randn, torch.rand "
                f"and torch.randint can be drawn for the global batch (see ood_lib.training.distributed)")
        if "size" in kwargs:
            lead, size = args, tuple(kwargs.pop("size"))
        elif func is torch.randint:
            lead, size = args[:-1], tuple(args[-1])
        else:  # randn(2, 3) or randn((2, 3))
            one = len(args) == 1 and isinstance(args[0], tuple | list | torch.Size)
            lead, size = (), tuple(args[0]) if one else tuple(args)
        if not size or size[0] != self.b:
            return func(*lead, size, **kwargs)
        r, n = self.replicas.rank, self.replicas.world
        full = func(*lead, (n * self.b, *size[1:]), **kwargs)  # [N b, ...]: the global draw
        return full[r * self.b : (r + 1) * self.b]


def current() -> Replicas:
    """This process's :class:`Replicas`: its rank in the initialised process group, else alone."""
    if dist.is_available() and dist.is_initialized():
        return Replicas(rank=dist.get_rank(), world=dist.get_world_size())
    return Replicas()


def setup() -> Replicas:
    """Join the process group of a ``torchrun`` launch with more than one process (NCCL and
    one GPU per process where CUDA is available, Gloo otherwise); alone, do nothing. Returns
    :func:`current`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or dist.is_initialized():
        return current()
    if torch.cuda.is_available():
        local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
        if local_world > torch.cuda.device_count():
            raise RuntimeError(f"{local_world} processes on this node but only "
                               f"{torch.cuda.device_count()} GPUs: one process per GPU")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=TIMEOUT,
                                device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return current()


def teardown() -> None:
    """Leave the process group, if :func:`setup` joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
