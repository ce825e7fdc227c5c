"""The model registry: "model M trained on dataset D under profile P" -> a trained model.

A chapter calls :func:`get`. The registry computes the model's *key* from everything that
determines the weights (model and training configuration, seed, and the training data's
coverage), e.g. ``glow-cifar10-cpu-3f2a9c1b0d``. If ``<checkpoints>/<key>/model.pt`` exists
(and its sha256 matches its record) it is loaded. Otherwise the model is trained with
:func:`ood_lib.training.loop.train` (resuming an interrupted run) -- but only where training is allowed:
always under ``smoke`` (its tiny models train in seconds during the build), and under ``cpu`` or
``paper`` only when asked (``allow_training=True``, the ``train`` command below, or the
environment variable ``OOD_TRAIN_MISSING=1`` that ``python -m book_runner --train-missing``
sets). A book build therefore never turns into hours of training because a config changed: it
stops with a :class:`CheckpointError` naming the model, its key and the command that trains it.
A trained model is saved with:

- ``model.pt``     the weights;
- ``log.csv``      the training log (train and monitored bits/dim over steps);
- ``record.json``  the manifest entry: config, data and coverage, steps, wall time,
  final bits/dim, sha256 of ``model.pt``.

``cpu`` and ``paper`` checkpoints live in ``checkpoints/`` (the ``cpu`` ones are committed) and
are indexed in ``checkpoints/manifest.json``; ``smoke`` ones go to ``_build/checkpoints``.

Retrain from the command line (this is the documented switch that retrains everything)::

    python -m ood_lib.zoo.registry train --profile cpu --retrain

The same command under ``torchrun --nproc_per_node=N`` trains one model on N GPUs (or N CPU
processes) with DistributedDataParallel; the weights do not depend on N (to float rounding)
and neither does the key (see :mod:`ood_lib.training.distributed`). Rank 0 writes the files.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ood_lib import catalogue, paths
from ood_lib.data import store
from ood_lib.models.base import DensityModel
from ood_lib.training import distributed, profiles
from ood_lib.training.loop import LOG_FILE, STATE_FILE, TrainConfig, TrainResult, train
from ood_lib.zoo.families import MODELS, model_config, train_config


class CheckpointError(RuntimeError):
    """A checkpoint is missing (with training disabled) or does not match its record."""


class StaleModelWarning(UserWarning):
    """A model trained before the held-out split existed stands in for its retrained version."""


def training_allowed(profile: str) -> bool:
    """Whether :func:`get` may train a missing model of ``profile`` by default."""
    return profile == "smoke" or os.environ.get(catalogue.TRAIN_MISSING_ENV) == "1"


def train_command(model: str, dataset: str, profile: str, seed: int = 0,
                  noise_fraction: float = 0.0, l2: float = 0.0) -> str:
    """The shell command that trains one model (quoted in errors)."""
    return (f"python -m ood_lib.zoo.registry train --profile {profile} --model {model} "
            f"--dataset {dataset}" + (f" --seed {seed}" if seed else "")
            + (f" --noise-fraction {noise_fraction}" if noise_fraction else "")
            + (f" --l2 {l2:g}" if l2 else ""))


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a trained model's weights."""

    model: str
    dataset: str
    profile: str
    seed: int
    model_config: dict
    train_config: TrainConfig
    train_data: dict

    @property
    def command(self) -> str:
        """The shell command that trains this model."""
        return train_command(self.model, self.dataset, self.profile, self.seed,
                             self.train_config.noise_fraction, self.train_config.l2)

    @property
    def key(self) -> str:
        blob = json.dumps(
            [self.model, self.dataset, self.seed, self.model_config,
             self.train_config.to_dict(), self.train_data],
            sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{self.model}-{self.dataset}-{self.profile}-{digest}"

    def build(self) -> DensityModel:
        """A freshly initialised model (seeded) for images of ``train_config.n_bits`` bits."""
        torch.manual_seed(self.seed)
        family = MODELS[self.model]
        net = family.model_cls(family.config_cls(**self.model_config))
        net.n_bits = self.train_config.n_bits
        return net


SAMPLES_FILE = "samples.npy"


@dataclass
class TrainedModel:
    model: DensityModel
    spec: ModelSpec
    record: dict
    log: pd.DataFrame
    path: Path
    # Why this checkpoint stands in for the model asked for (trained before the held-out split
    # existed, on its images too), with the command that retrains it; None: it is the model.
    stale: str | None = None

    @property
    def key(self) -> str:
        """The checkpoint's name: ``spec.key``, with ``.step<N>`` for a :func:`snapshot`."""
        return self.path.name

    @property
    def trained_index_range(self) -> tuple[int, int] | None:
        """``[start, stop)`` of the official training indices it trained on (``None``: the
        whole training split, for models that predate the held-out split)."""
        r = self.record["train_data"].get("index_range")
        return (r[0], r[1]) if r else None

    def fit_split(self, split: store.Split) -> store.Split:
        """``split`` if this model's fits may use it (:func:`ood_lib.data.store.check_fit_split`)."""
        return store.check_fit_split(split, self.trained_index_range)

    def samples(self) -> np.ndarray:
        """The uint8 samples ``[n, C, H, W]`` drawn when training ended (checked against the
        sha256 in the record)."""
        if "samples" not in self.record:
            raise CheckpointError(f"{self.key} was saved without samples")
        path = self.path / SAMPLES_FILE
        if _sha256(path) != self.record["samples"]["sha256"]:
            raise CheckpointError(f"{path} does not match the sha256 in its record.json")
        return np.load(path, allow_pickle=False)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_root(profile: str) -> Path:
    return paths.build_dir() / "checkpoints" if profile == "smoke" else paths.checkpoints_dir()


def training_split(dataset: str, profile: str, data_root: str | Path | None = None) -> store.Split:
    split = store.load(dataset, "train", data_root)
    n = profiles.TRAIN_IMAGES[profile]
    return split.subset(n) if n is not None and n < split.n else split


def train_data_entry(split: store.Split) -> dict:
    """What a model's key records of its training data: split, size and, for a dataset with a
    held-out split, the ``[start, stop)`` range of official training indices it trained on."""
    entry = {"split": "train", "n": split.n, "official_size": split.official_size}
    if split.dataset in catalogue.HELD_OUT:
        start, stop = int(split.index.min()), int(split.index.max()) + 1
        if stop - start != split.n:
            raise ValueError(f"{split.label}: training images are not one contiguous index range")
        entry["index_range"] = [start, stop]
    return entry


def make_spec(model: str, dataset: str, profile: str, train_split: store.Split, seed: int = 0,
              noise_fraction: float = 0.0, l2: float = 0.0) -> ModelSpec:
    return ModelSpec(
        model=model, dataset=dataset, profile=profile, seed=seed,
        model_config=model_config(model, dataset, profile),
        train_config=train_config(model, dataset, profile, noise_fraction, l2),
        train_data=train_data_entry(train_split),
    )


def legacy_spec(spec: ModelSpec) -> ModelSpec | None:
    """The model that stood for ``spec`` before the held-out split existed: the same family,
    seed, noise and weight penalty, trained on the whole official training split (its ``val``
    images included) with the configuration and budget of its day, as recorded in the
    checkpoint manifest (one of the same configuration first: a retrained model may also have
    a new architecture); or ``None``. Such a checkpoint is loaded only as a *stale* stand-in
    (:func:`get`)."""
    manifest_path = checkpoint_root(spec.profile) / "manifest.json"
    if spec.dataset not in catalogue.HELD_OUT or not manifest_path.exists():
        return None
    noise, l2 = spec.train_config.noise_fraction, spec.train_config.l2
    candidates = [
        (key, r) for key, r in sorted(json.loads(manifest_path.read_text()).items())
        if ((r["model"], r["dataset"], r["profile"], r["seed"]) == (spec.model, spec.dataset,
                                                                    spec.profile, spec.seed)
            and r["train_config"].get("noise_fraction", 0.0) == noise
            and r["train_config"].get("l2", 0.0) == l2
            and "index_range" not in r["train_data"])]
    for key, r in sorted(candidates, key=lambda c: c[1]["model_config"] != spec.model_config):
        old = replace(spec, model_config=r["model_config"],
                      train_config=TrainConfig(**r["train_config"]),
                      train_data={k: r["train_data"][k] for k in ("split", "n", "official_size")})
        if old.key == key:
            return old
    return None


def training_summary(trained: TrainedModel) -> dict[str, str]:
    """What a reader needs to judge a trained model, from its record: data (with the index
    range of official training images), size, budget in steps, epochs and CPU time (wall time
    under contention is not compute), the machine, and whether it is a stale stand-in."""
    r, tc = trained.record, trained.record["train_config"]
    cfg = {k: v for k, v in r["model_config"].items() if k not in ("in_channels", "image_size")}
    rng = r["train_data"].get("index_range")
    cpu = f"{r['cpu_s'] / 3600:.2f} h" if "cpu_s" in r else "not logged"
    return {
        "training images": r["train_data"]["coverage"]
        + (f", official indices {rng[0]:,}-{rng[1] - 1:,}" if rng else ", held-out split included"),
        "configuration": ", ".join(f"{k} {v}" for k, v in cfg.items()),
        "parameters": f"{r['n_params']:,}",
        "steps × batch": f"{r['steps']:,} × {tc['batch_size']}",
        "epochs": f"{r['steps'] * tc['batch_size'] / r['train_data']['n']:.1f}",
        "optimizer, lr": f"{tc['optimizer']}, {tc['lr']:g}, {tc.get('lr_schedule', 'constant')}",
        "skipped steps": f"{r['n_skipped']:,}",
        "CPU time": cpu,
        "wall time": f"{r['wall_s'] / 60:.1f} min",
        "machine": f"{r['device']}, {r['threads']} torch thread(s)",
        "checkpoint": r["key"] + (" (stale stand-in)" if trained.stale else ""),
    }


def predecessor(trained: TrainedModel) -> TrainedModel | None:
    """The checkpoint ``trained`` replaced (its :func:`legacy_spec`), for before/after curves and
    tables; ``None`` for a stale stand-in (it *is* the old model) or a model with none."""
    legacy = None if trained.stale else legacy_spec(trained.spec)
    path = None if legacy is None else checkpoint_root(legacy.profile) / legacy.key
    return _load(legacy, path) if path is not None and (path / "model.pt").exists() else None


def _machine() -> str:
    """The GPU's name, or the CPU's model name (Linux) or architecture."""
    if device().type == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _monitor_sets(dataset: str, profile: str, data_root: str | Path | None,
                  with_ood: bool = True) -> dict[str, torch.Tensor]:
    """Sets scored deterministically at every log row (their first ``eval_images`` images): a
    fixed slice of the training split, the held-out split (where the dataset has one), the
    in-distribution test split and, ``with_ood``, the paired OOD test split. The train slice
    gives a noise-free training curve beside the running loss (which mixes random
    dequantization and changing weights); it is not part of the model's key."""
    ood = catalogue.PAIRS.get(dataset) if with_ood else None
    sets = {f"{dataset}_train": store.load(dataset, "train", data_root).tensor()}
    if dataset in catalogue.HELD_OUT:
        sets[f"{dataset}_val"] = store.load(dataset, "val", data_root).tensor()
    for name in [dataset] + ([ood] if ood else []):
        sets[f"{name}_test"] = store.load(name, "test", data_root).tensor()
    return sets


def _load(spec: ModelSpec, path: Path) -> TrainedModel:
    record = json.loads((path / "record.json").read_text())
    if _sha256(path / "model.pt") != record["sha256"]:
        raise CheckpointError(
            f"{path / 'model.pt'} does not match the sha256 in its record.json (model "
            f"{spec.model} on {spec.dataset}, key {spec.key}); retrain it with "
            f"`{spec.command} --retrain`")
    model = spec.build()
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    model.to(device()).eval()
    return TrainedModel(model, spec, record, pd.read_csv(path / LOG_FILE), path)


def _draw_samples(net: DensityModel, n: int, seed: int, path: Path) -> dict:
    """Draw ``n`` samples (seeded) into ``path/samples.npy``; their record entry."""
    t0 = time.time()
    net.eval()
    g = torch.Generator(device=next(net.parameters()).device).manual_seed(seed)
    np.save(path / SAMPLES_FILE, net.sample(n, generator=g).cpu().numpy())
    return {"file": SAMPLES_FILE, "n": n, "seed": seed, "sha256": _sha256(path / SAMPLES_FILE),
            "wall_s": round(time.time() - t0, 1)}


def _update_manifest(root: Path, record: dict) -> None:
    """Add ``record`` to the manifest; an exclusive lock keeps two trainings that finish at
    once from overwriting each other's entry."""
    manifest_path = root / "manifest.json"
    with open(root / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        manifest[record["key"]] = {k: v for k, v in record.items() if k != "log_tail"}
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def get(
    model: str,
    dataset: str,
    profile: str,
    seed: int = 0,
    data_root: str | Path | None = None,
    allow_training: bool | None = None,
    retrain: bool = False,
    progress: bool = True,
    noise_fraction: float = 0.0,
    l2: float = 0.0,
) -> TrainedModel:
    """Load the checkpoint of ``model`` trained on ``dataset`` under ``profile`` (with a
    fraction ``noise_fraction`` of every batch's subpixels replaced by noise and an L2 weight
    penalty ``l2``: a background model); train it first if there is none (or if ``retrain``)
    and training is allowed (``None``: see :func:`training_allowed`), else raise
    :class:`CheckpointError`."""
    split = training_split(dataset, profile, data_root)
    spec = make_spec(model, dataset, profile, split, seed, noise_fraction, l2)
    root = checkpoint_root(profile)
    path = root / spec.key
    replicas = distributed.current()  # one process, or one rank of a torchrun launch
    if retrain:
        if replicas.is_main and path.exists():
            shutil.rmtree(path)
        replicas.barrier()
    if (path / "model.pt").exists():
        return _load(spec, path)
    allowed = training_allowed(profile) if allow_training is None else allow_training
    legacy = legacy_spec(spec)
    if not allowed and legacy is not None and (root / legacy.key / "model.pt").exists():
        trained = _load(legacy, root / legacy.key)
        trained.stale = (f"{trained.record['model']} on {dataset} is the checkpoint {legacy.key}, "
                         f"trained on all {legacy.train_data['n']:,} training images, the held-out "
                         f"{dataset}_val included; retrain it with `{spec.command}`")
        warnings.warn(f"STALE MODEL: {trained.stale}", StaleModelWarning, stacklevel=2)
        return trained
    if not allowed:
        raise CheckpointError(
            f"no checkpoint for model {model!r} trained on {dataset!r} under profile "
            f"{profile!r}: expected {path} (key {spec.key}). The book does not train "
            f"{profile!r} models by surprise. Train it with `{spec.command}`"
            f" (or every model with `make retrain PROFILE={profile}`), or let the build train "
            f"what is missing with `python -m book_runner --profile {profile} --train-missing`.")
    t0 = time.time()
    net, result = _train(spec, split, path, data_root, progress)
    if not replicas.is_main:  # rank 0 saves the model; the others load it once it is saved
        replicas.barrier()
        return _load(spec, path)
    _save(spec, split, net, path, result, t0, replicas.world)
    replicas.barrier()
    return _load(spec, path)


def _save(spec: ModelSpec, split: store.Split, net: DensityModel, path: Path,
          result: TrainResult, t0: float, world: int = 1, samples: bool = True) -> dict:
    """Save ``net`` as ``spec``'s model in ``path`` (weights, record, samples where the family
    draws them; the resumable state removed) and enter it in the manifest; its record."""
    torch.save(net.state_dict(), path / "model.pt")
    final = {k: v for k, v in result.log[-1].items() if k.endswith("_bpd")}
    record = {
        "key": path.name, "model": spec.model, "dataset": spec.dataset, "profile": spec.profile,
        "seed": spec.seed, "model_config": spec.model_config,
        "train_config": spec.train_config.to_dict(),
        "train_data": {**spec.train_data, "coverage": split.coverage_str, "source": split.source},
        "steps": result.steps, "n_skipped": result.n_skipped,
        "wall_s": round(result.wall_s, 1), "cpu_s": round(result.cpu_s, 1), "final_bpd": final,
        "n_params": sum(p.numel() for p in net.parameters()),
        "sha256": _sha256(path / "model.pt"),
        "device": _machine() if world == 1 else f"{world} x {_machine()}",
        **({"processes": world} if world > 1 else {}),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "session_s": round(time.time() - t0, 1),
    }
    if samples and MODELS[spec.model].n_samples:  # a handful under smoke: sampling is slow
        n = (min(MODELS[spec.model].n_samples, 4) if spec.profile == "smoke"
             else MODELS[spec.model].n_samples)
        record["samples"] = _draw_samples(net, n, spec.seed, path)
    (path / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    (path / STATE_FILE).unlink(missing_ok=True)
    _update_manifest(path.parent, record)
    return record


def _train(spec: ModelSpec, split: store.Split, path: Path, data_root: str | Path | None,
           progress: bool, stop_at: int | None = None) -> tuple[DensityModel, TrainResult]:
    """Train (or resume) ``spec``'s model in ``path`` up to ``stop_at`` (default: the end). A
    background model (``noise_fraction`` > 0) is not monitored on the test OOD set: the choice
    of its noise level and penalty never reads that set (:mod:`ood_lib.zoo.background`)."""
    net = spec.build().to(device())
    monitor = (_monitor_sets(spec.dataset, spec.profile, data_root,
                             with_ood=not spec.train_config.noise_fraction)
               if distributed.current().is_main else None)
    result = train(net, split.tensor(), spec.train_config, path, seed=spec.seed, monitor=monitor,
                   stop_at=stop_at, progress=progress)
    return net, result


SHORT_RUN_SUFFIX = ".short"


def train_partial(model: str, dataset: str, profile: str, stop_at: int, seed: int = 0,
                  data_root: str | Path | None = None, noise_fraction: float = 0.0,
                  l2: float = 0.0, progress: bool = True,
                  ) -> tuple[DensityModel, Path, TrainResult]:
    """The model of :func:`get` trained only up to step ``stop_at`` (a short run), the
    checkpoint directory holding its resumable state, and the run's :class:`TrainResult` (steps,
    times and log over every leg): a later :func:`get` of the same model resumes there, so the
    short run is the first ``stop_at`` steps of the full one (exactly). Called again, it
    resumes a killed short run or, at ``stop_at`` already, only loads it.

    A finished model keeps no early weights: its short run is trained anew in
    ``<key>.short`` beside it (batches and noise are functions of seed and step, so these are
    the finished run's weights at ``stop_at``), a folder the caller deletes. A run resumed
    past ``stop_at`` (not finished) has lost them: :class:`CheckpointError`."""
    split = training_split(dataset, profile, data_root)
    spec = make_spec(model, dataset, profile, split, seed, noise_fraction, l2)
    path = checkpoint_root(profile) / spec.key
    if (path / "model.pt").exists():
        path = path.with_name(spec.key + SHORT_RUN_SUFFIX)
    net, result = _train(spec, split, path, data_root, progress, stop_at=stop_at)
    if result.steps != min(stop_at, spec.train_config.steps):
        raise CheckpointError(f"the run in {path} is at step {result.steps:,}, past {stop_at:,}: "
                              f"its weights at step {stop_at:,} are not kept")
    return net.eval(), path, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train or list the book's models.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or load) models")
    t.add_argument("--profile", default="cpu", choices=catalogue.PROFILES)
    t.add_argument("--model", action="append", choices=sorted(MODELS))
    t.add_argument("--dataset", action="append", choices=sorted(catalogue.PAIRS))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--noise-fraction", type=float, default=0.0,
                   help="train a likelihood-ratio background model on inputs with this fraction "
                        "of subpixels replaced by uniform noise")
    t.add_argument("--l2", type=float, default=0.0,
                   help="lambda of an L2 penalty on the kernel weights (a background model)")
    t.add_argument("--data-root")
    t.add_argument("--retrain", action="store_true", help="delete and retrain existing checkpoints")
    sub.add_parser("list", help="print the checkpoint manifest")
    args = parser.parse_args(argv)
    if args.command == "list":
        manifest = paths.checkpoints_dir() / "manifest.json"
        if not manifest.exists():
            print(f"no manifest at {manifest}")
            return
        for key, r in sorted(json.loads(manifest.read_text()).items()):
            final = ", ".join(f"{k.removesuffix('_bpd')} {v:.3f}" for k, v in r["final_bpd"].items())
            print(f"{key}: {r['steps']:,} steps, {r['wall_s'] / 60:.1f} min on {r['device']}"
                  f" ({r['threads']} threads); bits/dim {final}")
        return
    replicas = distributed.setup()  # under torchrun with N > 1: join its process group
    try:
        for model in args.model or list(MODELS):
            for dataset in args.dataset or list(MODELS[model].cpu_steps):
                trained = get(model, dataset, args.profile, args.seed, args.data_root,
                              allow_training=True, retrain=args.retrain,
                              noise_fraction=args.noise_fraction, l2=args.l2)
                if replicas.is_main:
                    print(f"{trained.key}: final {trained.record['final_bpd']} "
                          f"({trained.record['wall_s']} s) -> {trained.path}")
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()


SNAPSHOT_SUFFIX = ".step{steps}"
# Log columns that a replay must reproduce exactly (the others are times and thread counts).
_REPLAYED = ("step", "epoch", "train_bpd", "lr", "grad_norm", "n_skipped")


def snapshot(model: str, dataset: str, profile: str, steps: int, command: str, seed: int = 0,
             data_root: str | Path | None = None, allow_training: bool | None = None,
             retrain: bool = False, progress: bool = True) -> TrainedModel:
    """The run of :func:`get` (``model`` on ``dataset``, ``seed``) as it was at step ``steps``,
    kept as a checkpoint of its own in ``<key>.step<steps>``: weights, log to that step and a
    record whose ``steps``, times and ``final_bpd`` are the run's at that step. A WAIC
    ensemble at a shorter budget than the headline run uses it, so that its member 0 *is* the
    headline run at that step, never a different run.

    Missing, it is trained where allowed (:func:`train_partial`, resuming a killed one) and
    saved; the resumable state it trained from (optimizer included) is then deleted. If the full
    run is shipped, the snapshot replays its first ``steps`` steps, and its log must equal the
    shipped log on every step both logged (losses, learning rate, gradient norm: all but times
    and thread counts), or :class:`CheckpointError`: a replay on another thread count or
    machine rounds differently and is a different run.

    ``command``: what trains the snapshot, named by the error when it is missing and training
    is not allowed (the caller's command line, e.g. the ensemble's); ``retrain``: delete the
    snapshot and train it again."""
    split = training_split(dataset, profile, data_root)
    spec = make_spec(model, dataset, profile, split, seed)
    every = spec.train_config.eval_every
    if not 0 < steps < spec.train_config.steps or steps % every:
        raise ValueError(f"a snapshot is taken at a logged step before the end (a multiple of "
                         f"{every:,} below {spec.train_config.steps:,}), not at {steps:,}")
    path = checkpoint_root(profile) / (spec.key + SNAPSHOT_SUFFIX.format(steps=steps))
    if retrain and path.exists():
        shutil.rmtree(path)
    if (path / "model.pt").exists():
        return _load(spec, path)
    allowed = training_allowed(profile) if allow_training is None else allow_training
    if not allowed:
        raise CheckpointError(
            f"no snapshot of {model!r} on {dataset!r} (seed {seed}) at step {steps:,} under "
            f"profile {profile!r}: expected {path}. Train it with `{command}`.")
    t0 = time.time()
    net, trained_in, result = train_partial(model, dataset, profile, steps, seed, data_root,
                                            progress=progress)
    full = checkpoint_root(profile) / spec.key
    if (full / "model.pt").exists():
        try:
            _check_replay(pd.read_csv(trained_in / LOG_FILE), pd.read_csv(full / LOG_FILE), full)
        except CheckpointError:
            shutil.rmtree(trained_in)  # another run's weights: of no use to any snapshot
            raise
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained_in / LOG_FILE, path / LOG_FILE)
    _save(spec, split, net, path, result, t0, samples=False)
    shutil.rmtree(trained_in)
    return _load(spec, path)


def _check_replay(replay: pd.DataFrame, shipped: pd.DataFrame, full: Path) -> None:
    """Raise :class:`CheckpointError` unless ``replay`` equals ``shipped`` on the steps both
    logged (see :func:`snapshot`)."""
    both = shipped[shipped["step"].isin(replay["step"])].reset_index(drop=True)
    mine = replay[replay["step"].isin(both["step"])].reset_index(drop=True)
    columns = [c for c in replay.columns if c.endswith("_bpd") or c in _REPLAYED]
    if both.empty or not mine[columns].equals(both[columns]):
        differ = [c for c in columns if not mine[c].equals(both[c])] if len(mine) else columns
        raise CheckpointError(
            f"the replay of {full.name} differs from its shipped log.csv in {differ}: it is not "
            f"the shipped run (another thread count or machine rounds differently)")
