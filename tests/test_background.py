"""Likelihood-ratio background models as Ren et al. chose them: the mu x lambda grid scored on a
validation pair that is never the test pair, the choice and its edge rule, the chosen run
continued and the others removed, resumable, and no surprise training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ood_lib import catalogue, paths
from ood_lib.data import store
from ood_lib.transforms import grey
from ood_lib.zoo import background, ensemble, registry


@pytest.fixture
def small_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 x 2 grid without extension: the rule as shipped, on fewer candidates."""
    monkeypatch.setattr(background, "MU_GRID", (0.1, 0.3))
    monkeypatch.setattr(background, "L2_GRID", (0.0, 10.0))
    monkeypatch.setattr(background, "MU_EXTENSION", ())


def test_validation_ood_is_never_the_test_ood_set() -> None:
    for dataset, val_ood in background.VALIDATION_OOD.items():
        assert val_ood not in (dataset, catalogue.PAIRS[dataset])
    assert background.VALIDATION_OOD == {"fashion_mnist": "notmnist", "cifar10": background.GREY,
                                         "notmnist": "fashion_mnist"}
    # the families with backgrounds: PixelCNN (Ren et al.'s model class) first, then Glow
    assert background.FAMILIES == ("pixelcnn", "glow")
    assert background.datasets("pixelcnn") == ("cifar10", "fashion_mnist")
    assert set(background.datasets("glow")) == {"cifar10", "fashion_mnist", "notmnist"}


def test_the_grid_is_ren_et_al_s() -> None:
    assert background.grid_points() == [(mu, l2) for mu in (0.1, 0.2, 0.3)
                                         for l2 in (0.0, 10.0, 100.0)]
    assert [mu for mu, _ in background.grid_points([0.5])][-3:] == [0.5, 0.5, 0.5]


def test_cifar10_validation_ood_is_the_next_held_out_images_in_grey(data_root: Path) -> None:
    """In: the first n held-out images; OOD: the next n, each pixel's BT.601 luma in all three
    channels; the two sides share no image."""
    fake = SimpleNamespace(spec=SimpleNamespace(dataset="cifar10"), fit_split=lambda s: s)
    val_in, val_ood = background.validation_sets(fake, "smoke", data_root)
    n = background.VALIDATION_IMAGES["smoke"]
    held_out = store.load("cifar10", "val", data_root).subset(2 * n).tensor()
    assert torch.equal(val_in.images, held_out[:n])
    assert torch.equal(val_ood.images, grey(held_out[n:]))
    assert torch.equal(val_ood.images[:, 0], val_ood.images[:, 1])
    assert torch.equal(val_ood.images[:, 1], val_ood.images[:, 2])
    # Y = round(0.299 R + 0.587 G + 0.114 B), by hand for one pixel
    r, g, b = (int(v) for v in held_out[n, :, 0, 0])
    assert int(val_ood.images[0, 0, 0, 0]) == int(0.299 * r + 0.587 * g + 0.114 * b + 0.5)
    assert "in grey" in val_ood.label and val_in.name != val_ood.name


def test_validation_sets_refuse_a_foreground_that_trained_on_the_held_out_split(
        data_root: Path) -> None:
    trained_on_all = SimpleNamespace(
        spec=SimpleNamespace(dataset="fashion_mnist"),
        fit_split=lambda s: store.check_fit_split(s, None))
    with pytest.raises(store.FitDataError):
        background.validation_sets(trained_on_all, "smoke", data_root)


def test_the_choice_and_its_edge() -> None:
    """Highest AUROC wins, ties to the smaller mu then the smaller lambda; a choice at the
    smallest (largest) mu is on the lower (upper) edge and names the next extension level."""
    grid = [{"mu": mu, "l2": l2, "validation_auroc": a}
            for (mu, l2), a in zip(background.grid_points(),
                                   [0.5, 0.6, 0.6, 0.7, 0.9, 0.9, 0.8, 0.9, 0.7], strict=True)]
    chosen = background.best(grid)
    assert (chosen["mu"], chosen["l2"]) == (0.2, 10.0)  # ties with (0.2, 100) and (0.3, 10)
    assert background.edge(grid, 0.2) is None
    assert background.edge(grid, 0.1) == {"side": "lower", "extend_mu": 0.05}
    assert background.edge(grid, 0.3) == {"side": "upper", "extend_mu": 0.5}
    assert background.edge(grid, 0.3, extend=False) == {"side": "upper", "extend_mu": None}
    extended = grid + [{"mu": 0.5, "l2": 0.0, "validation_auroc": 0.95}]
    assert background.edge(extended, 0.5) == {"side": "upper", "extend_mu": None}  # spent
    assert background.edge(extended, 0.3) is None


def test_the_shipped_glow_choices_still_load_as_the_old_rule() -> None:
    """The Glow backgrounds chosen before this rule keep loading, in the new record's shape,
    flagged as the old rule, stale where their foreground has been replaced; a training set
    whose Glow background has been chosen by this rule since reports that choice instead."""
    root = paths.checkpoints_dir()
    for dataset in ("cifar10", "fashion_mnist", "notmnist"):
        raw = json.loads((root / f"background-{dataset}.json").read_text())
        record = background.old_selection(dataset, "cpu")
        assert record["rule"] == background.OLD_RULE
        assert record["choice"]["mu"] == raw["mu"] and record["choice"]["l2"] == 0.0
        assert [c["validation_auroc"] for c in record["grid"]] == [
            c["validation_auroc"] for c in raw["grid"]]
        if background.selection_path("glow", dataset, "cpu").exists():  # this rule's since
            assert background.selection("glow", dataset, "cpu")["rule"] != background.OLD_RULE
            continue
        assert background.selection("glow", dataset, "cpu") == record
        line = background.status("glow", dataset, "cpu", raw["foreground"])
        assert "old rule" in line and "stale" not in line
        assert "stale" in background.status("glow", dataset, "cpu", "glow-other")
    # CIFAR-10's old choice, mu = 0.2 of {0.1, 0.2, 0.3}, is inside its grid; Fashion-MNIST's
    # 0.3 is on the edge, which the old rule did not extend
    assert background.old_selection("cifar10", "cpu")["edge"] is None
    assert background.old_selection("fashion_mnist", "cpu")["edge"] == {
        "side": "upper", "extend_mu": None}


def test_a_missing_cpu_background_is_a_clear_error(build: Path) -> None:
    with pytest.raises(registry.CheckpointError,
                       match="python -m ood_lib.zoo.background --profile cpu --model pixelcnn "
                             "--dataset cifar10"):
        background.get("pixelcnn", "cifar10", "cpu")
    assert "no background model yet" in background.status("pixelcnn", "cifar10", "cpu", "x")


def test_the_status_counts_the_short_runs_trained_before_any_is_scored(build: Path) -> None:
    short, _ = background.steps("pixelcnn", "cifar10", "cpu")
    points = background.grid_points()
    keys = background.candidate_keys("pixelcnn", "cifar10", "cpu", points[:3])
    for key, last in zip(keys.values(), (short, short, short - 250), strict=True):
        run = registry.checkpoint_root("cpu") / key
        run.mkdir(parents=True)
        (run / "log.csv").write_text(f"step,train_bpd\n250,6.0\n{last},5.0\n")
    assert background.grid_progress("pixelcnn", "cifar10", "cpu") == (2, len(points))
    line = background.status("pixelcnn", "cifar10", "cpu", "x")
    assert f"2 of {len(points)} candidates' short runs ({short:,} steps) are trained" in line
    assert "--dataset cifar10 --grid-only" in line


@pytest.mark.slow
def test_companions_name_what_is_missing_and_its_command(build: Path) -> None:
    """Without training, a family's missing background leaves the ratio out with a line that
    names the command; nothing is trained."""
    registry.get("pixelcnn", "fashion_mnist", "smoke", progress=False)  # the foreground only
    bundle = ensemble.companions("pixelcnn", "fashion_mnist", "smoke", allow_training=False)
    assert bundle.background is None and not bundle.members
    (line,) = bundle.left_out
    assert line.startswith("likelihood ratio: ") and "--model pixelcnn" in line
    assert ensemble.companions("vae", "fashion_mnist", "smoke") == ensemble.Companions()
    assert not background.selection_path("pixelcnn", "fashion_mnist", "smoke").exists()


@pytest.mark.slow
def test_the_choice_never_reads_the_test_ood_set_and_resumes_where_it_stopped(
        build: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole rule on a PixelCNN, with the loader of the test OOD split (MNIST) poisoned to
    raise: the grid, the choice and the chosen model's completion never read it. A run killed
    after two candidates resumes with the other two only; the losers' runs are deleted."""
    foreground = registry.get("pixelcnn", "fashion_mnist", "smoke", progress=False)
    load = store.load

    def poisoned(name: str, split: str, *args: object, **kwargs: object) -> store.Split:
        if (name, split) == (catalogue.PAIRS["fashion_mnist"], "test"):
            raise AssertionError("the choice read the test OOD set")
        return load(name, split, *args, **kwargs)

    monkeypatch.setattr(store, "load", poisoned)
    train_partial = registry.train_partial
    calls, kill_after = [], [2]

    def counted(*args: object, **kwargs: object) -> tuple:
        if len(calls) == kill_after[0]:
            raise KeyboardInterrupt
        calls.append((kwargs["noise_fraction"], kwargs["l2"]))
        return train_partial(*args, **kwargs)

    monkeypatch.setattr(registry, "train_partial", counted)
    with pytest.raises(KeyboardInterrupt):
        background.select("pixelcnn", "fashion_mnist", "smoke", progress=False)
    record = background.selection("pixelcnn", "fashion_mnist", "smoke")
    assert [(c["mu"], c["l2"]) for c in record["grid"]] == calls and record["choice"] is None
    with pytest.raises(registry.CheckpointError, match="2 of the 4 grid candidates"):
        background.get("pixelcnn", "fashion_mnist", "smoke", allow_training=False)

    scored, kill_after[0] = list(calls), None
    calls.clear()
    trained, record = background.get("pixelcnn", "fashion_mnist", "smoke")
    assert len(calls) == 2 and not set(calls) & set(scored)  # only those not scored before
    assert record["rule"] == background.RULE and record["foreground"] == foreground.key
    assert record["validation_ood"].startswith("NotMNIST-Test")
    assert record["validation_in"].startswith("FashionMNIST-Val")
    grid = {(c["mu"], c["l2"]): c["validation_auroc"] for c in record["grid"]}
    assert set(grid) == {(0.1, 0.0), (0.1, 10.0), (0.3, 0.0), (0.3, 10.0)}
    # each candidate's training cost outlives its deleted folder
    assert all(c["cpu_s"] > 0 for c in record["grid"])
    chosen = (record["choice"]["mu"], record["choice"]["l2"])
    assert chosen == max(grid, key=lambda p: (grid[p], -p[0], -p[1]))
    tc = trained.record["train_config"]
    assert (tc["noise_fraction"], tc.get("l2", 0.0)) == chosen
    assert tc["steps"] == record["full_steps"] == foreground.record["steps"]
    assert record["select_steps"] == round(background.SELECT_FRACTION * record["full_steps"])
    assert trained.spec.model_config == foreground.spec.model_config  # same configuration
    assert f"{catalogue.PAIRS['fashion_mnist']}_test_bpd" not in trained.log.columns
    root = build / "build" / "checkpoints"
    assert json.loads((root / "background-pixelcnn-fashion_mnist.json").read_text()) == record
    runs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert runs == sorted([foreground.key, trained.key])  # the losers' runs are gone
    again, _ = background.get("pixelcnn", "fashion_mnist", "smoke", allow_training=False)
    assert again.key == trained.key
    assert ensemble.companions("pixelcnn", "fashion_mnist", "smoke").background.key == trained.key
    background.discard("pixelcnn", "fashion_mnist", "smoke")  # what --retrain starts with
    assert not background.selection_path("pixelcnn", "fashion_mnist", "smoke").exists()
    assert not trained.path.exists() and foreground.path.exists()


@pytest.mark.slow
def test_an_edge_choice_waits_for_its_extension(build: Path, small_grid: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A choice on the grid's edge is reported with the extension to run, and nothing more is
    trained until asked (--extend); then the grid holds the new level and the choice is made
    again over all of it."""
    monkeypatch.setattr(background, "L2_GRID", (0.0,))
    monkeypatch.setattr(background, "MU_GRID", (0.2,))  # one level: its choice is an edge
    monkeypatch.setattr(background, "MU_EXTENSION", (0.05,))
    record = background.select("glow", "notmnist", "smoke", progress=False)
    assert record["edge"] == {"side": "lower", "extend_mu": 0.05}
    assert "--extend" in background.unfinished(record)
    with pytest.raises(registry.CheckpointError, match="lower edge"):
        background.complete(record)
    with pytest.raises(registry.CheckpointError, match="--extend"):
        background.get("glow", "notmnist", "smoke", allow_training=False)
    background.main(["--profile", "smoke", "--model", "glow", "--dataset", "notmnist"])
    assert len(background.selection("glow", "notmnist", "smoke")["grid"]) == 1  # not extended
    background.main(["--profile", "smoke", "--model", "glow", "--dataset", "notmnist",
                     "--extend"])
    record = background.selection("glow", "notmnist", "smoke")
    assert record["extension"] == [0.05] and {c["mu"] for c in record["grid"]} == {0.05, 0.2}
    assert background.unfinished(record) is None
    trained, _ = background.get("glow", "notmnist", "smoke", allow_training=False)
    assert trained.spec.train_config.noise_fraction == record["choice"]["mu"]


@pytest.mark.slow
def test_grid_only_trains_the_candidates_without_a_foreground(
        build: Path, small_grid: None, capsys: pytest.CaptureFixture) -> None:
    """--grid-only trains each candidate's short run and stops there (no foreground, no
    choice); the later full command scores those runs without training them again."""
    background.main(["--profile", "smoke", "--model", "glow", "--dataset", "notmnist",
                     "--grid-only"])
    assert "[4/4]" in capsys.readouterr().out
    root = build / "build" / "checkpoints"
    states = sorted(root.glob("glow-*/train_state.pt"))
    assert len(states) == 4 and not list(root.glob("*/model.pt"))
    assert background.selection("glow", "notmnist", "smoke") is None
    before = {p: p.stat().st_mtime_ns for p in states}
    record = background.select("glow", "notmnist", "smoke", progress=False)
    assert len(record["grid"]) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # loaded, not retrained
    shutil.rmtree(root)


def test_shards_split_the_grid_between_processes(build: Path, small_grid: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``--shard k/n`` processes train disjoint candidates that together cover the grid."""
    trained: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for k in (0, 1):
        monkeypatch.setattr(background.registry, "train_partial",
                            lambda *a, noise_fraction, l2, k=k, **kw:
                            trained[k].append((noise_fraction, l2)))
        background.train_grid("glow", "notmnist", "smoke", shard=(k, 2), progress=False)
    assert trained[0] == [(0.1, 0.0), (0.3, 0.0)] and trained[1] == [(0.1, 10.0), (0.3, 10.0)]
    with pytest.raises(ValueError, match="shard 2/2"):
        background.train_grid("glow", "notmnist", "smoke", shard=(2, 2))
    with pytest.raises(SystemExit):
        background.main(["--model", "glow", "--dataset", "notmnist", "--grid-only",
                         "--shard", "1"])
