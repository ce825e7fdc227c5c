r"""Likelihood over training: the data of the paper's Figure 5.

Every training run logs, every ``eval_every`` steps, the deterministic bits/dim of the first
``eval_images`` images of the in-distribution test split and of the paired OOD test split, and
(runs trained after the decomposition chapter was added) of a fixed slice of the training
split. :func:`ood_curves` turns such a log into one row per logged step with the OOD $-$ test
gap; a negative gap means the OOD set is *more* likely at that point of training (claim 5 of
the paper: at every point, so early stopping would not help).
"""

from __future__ import annotations

import pandas as pd

from ood_lib import profiles


def ood_curves(log: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per logged step: ``step``, ``epoch``, ``train`` bits/dim with its ``train source``
    (the deterministic train slice where the log has one, else the running training loss),
    ``test``, ``ood`` and ``ood − test``."""
    ood = profiles.PAIRS[dataset]
    has_slice = f"{dataset}_train_bpd" in log
    return pd.DataFrame({
        "step": log["step"], "epoch": log["epoch"],
        "train": log[f"{dataset}_train_bpd" if has_slice else "train_bpd"],
        "train source": "deterministic train slice" if has_slice else "running training loss",
        "test": log[f"{dataset}_test_bpd"], "ood": log[f"{ood}_test_bpd"],
        "ood − test": log[f"{ood}_test_bpd"] - log[f"{dataset}_test_bpd"],
    })


def gap_summary(curves: pd.DataFrame) -> dict[str, float | int | bool]:
    """Whether the OOD set is preferred at every logged step, and the gap's range."""
    gap = curves["ood − test"]
    return {"logged steps": len(gap), "steps with OOD preferred": int((gap < 0).sum()),
            "at every step": bool((gap < 0).all()), "largest gap": float(gap.max()),
            "smallest gap": float(gap.min()), "final gap": float(gap.iloc[-1])}
