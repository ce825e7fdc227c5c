"""The model registry: "model M trained on dataset D under profile P" -> a trained model.

A chapter calls :func:`get`. The registry computes the model's *key* from everything that
determines the weights (model and training configuration, seed, and the training data's
coverage), e.g. ``glow-cifar10-cpu-3f2a9c1b0d``. If ``<checkpoints>/<key>/model.pt`` exists
(and its sha256 matches its record) it is loaded; otherwise the model is trained with
:func:`ood_lib.train.train` (resuming an interrupted run) and saved with:

- ``model.pt``     the weights;
- ``log.csv``      the training log (train and monitored bits/dim over steps);
- ``record.json``  the manifest entry: config, data and coverage, steps, wall time,
  final bits/dim, sha256 of ``model.pt``.

``cpu`` and ``paper`` checkpoints live in ``checkpoints/`` (the ``cpu`` ones are committed) and
are indexed in ``checkpoints/manifest.json``; ``smoke`` ones go to ``_build/checkpoints``.

Retrain from the command line (this is the documented switch that retrains everything)::

    python -m ood_lib.registry train --profile cpu --retrain
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ood_lib import data, paths, profiles
from ood_lib.glow import Glow, GlowConfig
from ood_lib.train import LOG_FILE, STATE_FILE, TrainConfig, train


def _glow(config: dict) -> nn.Module:
    return Glow(GlowConfig(**config))


# Model name -> builder from the profile's config; "glow_cv" differs only in its config
# (additive couplings: the constant-volume Glow).
MODELS: dict[str, Callable[[dict], nn.Module]] = {"glow": _glow, "glow_cv": _glow}


class CheckpointError(RuntimeError):
    """A checkpoint is missing (with training disabled) or does not match its record."""


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
    def key(self) -> str:
        blob = json.dumps(
            [self.model, self.dataset, self.seed, self.model_config,
             self.train_config.to_dict(), self.train_data],
            sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{self.model}-{self.dataset}-{self.profile}-{digest}"

    def build(self) -> nn.Module:
        """A freshly initialised model (seeded)."""
        torch.manual_seed(self.seed)
        return MODELS[self.model](self.model_config)


@dataclass
class TrainedModel:
    model: nn.Module
    spec: ModelSpec
    record: dict
    log: pd.DataFrame
    path: Path

    @property
    def key(self) -> str:
        return self.spec.key


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_root(profile: str) -> Path:
    return paths.build_dir() / "checkpoints" if profile == "smoke" else paths.checkpoints_dir()


def training_split(dataset: str, profile: str, data_root: str | Path | None = None) -> data.Split:
    split = data.load(dataset, "train", data_root)
    n = profiles.TRAIN_IMAGES[profile]
    return split.subset(n) if n is not None and n < split.n else split


def make_spec(model: str, dataset: str, profile: str, train_split: data.Split, seed: int = 0) -> ModelSpec:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; registered: {sorted(MODELS)}")
    return ModelSpec(
        model=model, dataset=dataset, profile=profile, seed=seed,
        model_config=profiles.model_config(model, dataset, profile),
        train_config=profiles.train_config(model, dataset, profile),
        train_data={"split": "train", "n": train_split.n, "official_size": train_split.official_size},
    )


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


def _monitor_sets(dataset: str, profile: str, data_root: str | Path | None) -> dict[str, torch.Tensor]:
    """Held-out in-distribution test data and the paired OOD test set, scored during training."""
    ood = profiles.PAIRS.get(dataset)
    names = [dataset] + ([ood] if ood else [])
    return {f"{name}_test": data.load(name, "test", data_root).tensor() for name in names}


def _load(spec: ModelSpec, path: Path) -> TrainedModel:
    record = json.loads((path / "record.json").read_text())
    if _sha256(path / "model.pt") != record["sha256"]:
        raise CheckpointError(f"{path / 'model.pt'} does not match the sha256 in its record.json")
    model = spec.build()
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    model.to(device()).eval()
    return TrainedModel(model, spec, record, pd.read_csv(path / LOG_FILE), path)


def _update_manifest(root: Path, record: dict) -> None:
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[record["key"]] = {k: v for k, v in record.items() if k != "log_tail"}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def get(
    model: str,
    dataset: str,
    profile: str,
    seed: int = 0,
    data_root: str | Path | None = None,
    allow_training: bool = True,
    retrain: bool = False,
    progress: bool = True,
) -> TrainedModel:
    """Load the checkpoint of ``model`` trained on ``dataset`` under ``profile``; train it first
    if there is none (or if ``retrain``)."""
    split = training_split(dataset, profile, data_root)
    spec = make_spec(model, dataset, profile, split, seed)
    root = checkpoint_root(profile)
    path = root / spec.key
    if retrain and path.exists():
        shutil.rmtree(path)
    if (path / "model.pt").exists():
        return _load(spec, path)
    if not allow_training:
        raise CheckpointError(f"no checkpoint {spec.key} in {root} and training is disabled")
    net = spec.build().to(device())
    t0 = time.time()
    result = train(net, split.tensor(), spec.train_config, path, seed=seed,
                   monitor=_monitor_sets(dataset, profile, data_root), progress=progress)
    torch.save(net.state_dict(), path / "model.pt")
    final = {k: v for k, v in result.log[-1].items() if k.endswith("_bpd")}
    record = {
        "key": spec.key, "model": model, "dataset": dataset, "profile": profile, "seed": seed,
        "model_config": spec.model_config, "train_config": spec.train_config.to_dict(),
        "train_data": {**spec.train_data, "coverage": split.coverage_str, "source": split.source},
        "steps": result.steps, "n_skipped": result.n_skipped,
        "wall_s": round(result.wall_s, 1), "final_bpd": final,
        "n_params": sum(p.numel() for p in net.parameters()),
        "sha256": _sha256(path / "model.pt"),
        "device": _machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "session_s": round(time.time() - t0, 1),
    }
    (path / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    (path / STATE_FILE).unlink(missing_ok=True)
    _update_manifest(root, record)
    return _load(spec, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train or list the book's models.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or load) models")
    t.add_argument("--profile", default="cpu", choices=profiles.PROFILES)
    t.add_argument("--model", action="append", choices=sorted(MODELS))
    t.add_argument("--dataset", action="append", choices=sorted(profiles.PAIRS))
    t.add_argument("--seed", type=int, default=0)
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
    for model in args.model or ["glow"]:
        for dataset in args.dataset or list(profiles.PAIRS):
            trained = get(model, dataset, args.profile, args.seed, args.data_root,
                          retrain=args.retrain)
            print(f"{trained.key}: final {trained.record['final_bpd']} "
                  f"({trained.record['wall_s']} s) -> {trained.path}")


if __name__ == "__main__":
    main()
