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

from ood_lib import catalogue, records


def ood_curves(log: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per logged step: ``step``, ``epoch``, ``train`` bits/dim with its ``train source``
    (the deterministic train slice where the log has one, else the running training loss),
    ``test``, ``ood`` and ``ood − test``."""
    ood = catalogue.PAIRS[dataset]
    has_slice = f"{dataset}_train_bpd" in log
    return pd.DataFrame({
        "step": log["step"], "epoch": log["epoch"],
        "train": log[f"{dataset}_train_bpd" if has_slice else "train_bpd"],
        "train source": "deterministic train slice" if has_slice else "running training loss",
        "test": log[f"{dataset}_test_bpd"], "ood": log[f"{ood}_test_bpd"],
        "ood − test": log[f"{ood}_test_bpd"] - log[f"{dataset}_test_bpd"],
    })


def gap_summary(curves: pd.DataFrame, model: str, dataset: str) -> records.GapOverTraining:
    """Whether the OOD set is preferred at every logged step of ``model`` trained on
    ``dataset``, over how many epochs the log runs, and the final gap."""
    gap = curves["ood − test"]
    return records.GapOverTraining(
        model=model, trained_on=dataset, logged_steps=len(gap),
        epochs_logged=float(curves["epoch"].iloc[-1]),
        steps_with_ood_preferred=int((gap < 0).sum()), at_every_step=bool((gap < 0).all()),
        final_gap=float(gap.iloc[-1]))


# Roles of a learning curve: the log column that holds each (the train role prefers the
# deterministic train slice; older logs only have the running training loss).
CURVE_ROLES = ("train", "held-out", "test", "OOD")


def learning_curve(log: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """A training log in long form for plotting against compute: one row per logged step and
    role (``train``, ``held-out``, ``test``, ``OOD``, those the log has), with ``hours``, the
    process CPU-hours where the log has ``cpu_s`` and otherwise wall-clock hours (``clock``
    says which: wall time under contention is not compute), and ``bpd``."""
    ood = catalogue.PAIRS[dataset]
    columns = {"train": f"{dataset}_train_bpd" if f"{dataset}_train_bpd" in log else "train_bpd",
               "held-out": f"{dataset}_val_bpd", "test": f"{dataset}_test_bpd",
               "OOD": f"{ood}_test_bpd"}
    clock = "CPU" if "cpu_s" in log else "wall"
    hours = log["cpu_s" if clock == "CPU" else "wall_s"] / 3600
    return pd.concat([
        pd.DataFrame({"step": log["step"], "epoch": log["epoch"], "hours": hours, "clock": clock,
                      "role": role, "bpd": log[column]})
        for role, column in columns.items() if column in log], ignore_index=True)
