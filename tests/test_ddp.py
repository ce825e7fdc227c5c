"""Data-parallel training (ood_lib.training.distributed): two Gloo processes on 127.0.0.1 end where one
process ends, skip the same non-finite steps, and refuse a batch that does not split."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ood_lib.models.base import DensityModel
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.models.pixelcnn import PixelCNN, PixelCNNConfig
from ood_lib.models.vae import VAE, VAEConfig
from ood_lib.training.distributed import GlobalBatchNoise, Replicas
from ood_lib.training.loop import LOG_FILE, TrainConfig, TrainResult, train

pytestmark = pytest.mark.ddp

WORLD = 2
CFG = TrainConfig(steps=6, batch_size=8, lr=1e-3, warmup_steps=2, eval_every=3, eval_images=16,
                  checkpoint_every=3, init_batch_size=32)


def _images() -> torch.Tensor:
    """64 random uint8 images [64, 1, 8, 8]."""
    return torch.randint(0, 256, (64, 1, 8, 8), generator=torch.Generator().manual_seed(5),
                         dtype=torch.uint8)


def _glow() -> Glow:
    torch.manual_seed(0)
    return Glow(GlowConfig(in_channels=1, image_size=8, levels=2, steps=2, hidden=8))


def _vae() -> VAE:  # draws its reparameterisation noise from the step generator in train_loss
    torch.manual_seed(0)
    return VAE(VAEConfig(in_channels=1, image_size=8, hidden=8, latent=4, k_eval=2))


def _pixelcnn() -> PixelCNN:
    torch.manual_seed(0)
    return PixelCNN(PixelCNNConfig(in_channels=1, image_size=8, hidden=8, layers=2, kernel=3,
                                   first_kernel=3))


class _Flaky(DensityModel):
    """A Glow whose training loss is NaN at chosen steps (its forward passes with gradients)."""

    likelihood = "continuous"

    def __init__(self, bad_steps: set[int]) -> None:
        super().__init__()
        self.glow, self.bad_steps, self.steps = _glow(), bad_steps, 0

    def log_prob_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.glow.log_prob_parts(x)
        if torch.is_grad_enabled():  # not actnorm's initialisation, not evaluation
            if self.steps in self.bad_steps:
                parts["log_px"] = parts["log_px"] * float("nan")
            self.steps += 1
        return parts


FAMILIES: dict[str, Callable[[], DensityModel]] = {
    "glow": _glow, "vae": _vae, "pixelcnn": _pixelcnn}


def _worker(rank: int, port: int, out: Path) -> None:
    """One of the WORLD processes: every scenario in turn, results saved under ``out``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        x = _images()
        for name, build in FAMILIES.items():  # interrupted after step 4, then resumed
            train(build(), x, CFG, out / name, monitor={"held_out": x[:16]}, stop_at=4,
                  progress=False)
            model = build()  # as a fresh process would: every rank loads rank 0's checkpoint
            result = train(model, x, CFG, out / name, monitor={"held_out": x[:16]},
                           progress=False)
            torch.save({"state": model.state_dict(), "n_skipped": result.n_skipped,
                        "log": result.log}, out / f"{name}.{rank}.pt")
        flaky = _Flaky({2} if rank == 1 else set())  # a NaN loss on rank 1 alone, at step 2
        result = train(flaky, x, CFG, out / "flaky", progress=False)
        torch.save({"state": flaky.state_dict(), "n_skipped": result.n_skipped},
                   out / f"flaky.{rank}.pt")
        try:
            train(_glow(), x, TrainConfig(**{**CFG.to_dict(), "batch_size": 9}), out / "odd",
                  progress=False)
        except ValueError as error:
            (out / f"odd.{rank}.txt").write_text(str(error))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the two processes' results (they run once for the whole module)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    return out


def _alone(build: Callable[[], DensityModel], out: Path) -> tuple[DensityModel, TrainResult]:
    model = build()
    result = train(model, _images(), CFG, out, monitor={"held_out": _images()[:16]},
                   progress=False)
    return model, result


def _assert_close(a: dict, b: dict, atol: float) -> None:
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_processes_end_where_one_ends(family: str, runs: Path, tmp_path: Path) -> None:
    ranks = [torch.load(runs / f"{family}.{r}.pt", weights_only=False) for r in range(WORLD)]
    for name, value in ranks[0]["state"].items():  # the replicas never drift apart
        assert torch.equal(value, ranks[1]["state"][name]), name
    model, result = _alone(FAMILIES[family], tmp_path)
    _assert_close(model.state_dict(), ranks[0]["state"], atol=1e-5)
    # rank 0 logged (train loss = mean of the shards' means); rank 1 holds only the rows it
    # loaded with rank 0's checkpoint at step 4
    assert [row["step"] for row in ranks[0]["log"]] == [3, 6]
    assert [row["step"] for row in ranks[1]["log"]] == [3]
    for mine, alone in zip(ranks[0]["log"], result.log, strict=True):
        for key in ("train_bpd", "held_out_bpd", "grad_norm"):
            assert mine[key] == pytest.approx(alone[key], abs=1e-4), key
    assert (runs / family / LOG_FILE).exists()


def test_a_non_finite_step_on_one_rank_is_skipped_on_both(runs: Path, tmp_path: Path) -> None:
    ranks = [torch.load(runs / f"flaky.{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [r["n_skipped"] for r in ranks] == [1, 1]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    alone = _Flaky({2})  # one process skipping the same step ends at the same weights
    assert train(alone, _images(), CFG, tmp_path, progress=False).n_skipped == 1
    _assert_close(alone.state_dict(), ranks[0]["state"], atol=1e-5)


def test_a_batch_that_does_not_split_is_a_clear_error(runs: Path) -> None:
    for r in range(WORLD):
        message = (runs / f"odd.{r}.txt").read_text()
        assert "9 images does not divide by 2 processes" in message
    with pytest.raises(ValueError, match="--nproc_per_node that divides 64"):
        Replicas(rank=0, world=3).check_batch(64)


@pytest.mark.parametrize("rank", range(WORLD))
def test_noise_drawn_in_train_loss_is_the_global_draw_sliced(rank: int) -> None:
    alone = torch.Generator().manual_seed(3)
    per_image, shared = torch.randn((8, 5), generator=alone), torch.rand(7, generator=alone)
    ints = torch.randint(0, 9, (8, 2), generator=alone)
    g = torch.Generator().manual_seed(3)
    with GlobalBatchNoise(g, Replicas(rank=rank, world=WORLD), shard_size=4):
        rows = slice(4 * rank, 4 * rank + 4)
        assert torch.equal(torch.randn(4, 5, generator=g), per_image[rows])
        assert torch.equal(torch.rand(size=(7,), generator=g), shared)  # not per image: as is
        assert torch.equal(torch.randint(0, 9, (4, 2), generator=g), ints[rows])
        with pytest.raises(NotImplementedError, match="normal_"):
            torch.empty(4, 5).normal_(generator=g)
    assert torch.equal(g.get_state(), alone.get_state())  # as far on as the one-process run
