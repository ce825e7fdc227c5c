"""Figures shared by the chapters.

Every function draws on a matplotlib ``Axes`` (a new figure when none is given) and returns
it, so chapters can compose panels. Images are uint8 arrays (N, H, W, C), channels last, with
C = 1 (grey) or 3 (RGB). Call :func:`set_style` once per chapter for the book's look.

**One palette for the whole book.** Every dataset has one colour (:data:`DATASET_COLOURS`) and
every model family another (:data:`FAMILY_COLOURS`), taken from seaborn's colour-blind palette
so that no two of them share a colour; every function below that draws a dataset or a family
takes its colour from :func:`styles`, so CIFAR-10 is the same blue in every chapter. Splits of
one dataset in the same panel (train and test) share its colour and differ by line style.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ood_lib.catalogue import FAMILY_NAMES

LEVELS = 256

_COLOURBLIND = sns.color_palette("colorblind", 10)
#: One colour per dataset (registry key), in every figure of the book.
DATASET_COLOURS: dict[str, tuple[float, float, float]] = {
    "cifar10": _COLOURBLIND[0], "svhn": _COLOURBLIND[1], "fashion_mnist": _COLOURBLIND[2],
    "mnist": _COLOURBLIND[3], "notmnist": _COLOURBLIND[4],
}
#: One colour per model family (registry name), distinct from every dataset's.
FAMILY_COLOURS: dict[str, tuple[float, float, float]] = {
    "glow": _COLOURBLIND[5], "glow_cv": _COLOURBLIND[6], "pixelcnn": _COLOURBLIND[9],
    "vae": _COLOURBLIND[7],
}
# Dataset names as labels spell them ("FashionMNIST-Test", "fashion mnist test"); longest
# first, so that "FashionMNIST" and "NotMNIST" are not read as "MNIST".
_DATASET_SPELLINGS = sorted(
    ((spelling, key) for key in DATASET_COLOURS
     for spelling in {key, key.replace("_", " "), key.replace("_", ""),
                      {"cifar10": "cifar-10", "fashion_mnist": "fashion-mnist"}.get(key, key)}),
    key=lambda item: -len(item[0]))
LINE_STYLES = ("-", "--", ":", "-.")


def colour(label: str) -> tuple[float, float, float] | None:
    """The book's colour for a family (``"PixelCNN"``, ``"glow_cv"``) or a dataset named at
    the start of ``label`` (``"SVHN-Test"``, ``"cifar10 test"``); ``None`` for anything else."""
    for key, name in FAMILY_NAMES.items():
        if label in (key, name):
            return FAMILY_COLOURS[key]
    low = label.lower()
    for spelling, key in _DATASET_SPELLINGS:
        if low.startswith(spelling):
            return DATASET_COLOURS[key]
    return None


def styles(labels: list[str]) -> dict[str, dict[str, object]]:
    """Matplotlib keywords (``color``, ``linestyle``) for each label of one panel: the book's
    colour of its dataset or family (:func:`colour`), a new line style for each further label
    of the same colour; labels without a colour take the next free colour of the cycle."""
    used = {c for c in map(colour, labels) if c is not None}
    free = itertools.cycle([c for c in _COLOURBLIND
                            if c not in used and c not in FAMILY_COLOURS.values()] or _COLOURBLIND)
    seen: dict[tuple[float, float, float], int] = {}
    out: dict[str, dict[str, object]] = {}
    for label in labels:
        c = colour(label) or next(free)
        n = seen.get(c, 0)
        seen[c] = n + 1
        out[label] = {"color": c, "linestyle": LINE_STYLES[n % len(LINE_STYLES)]}
    return out


def set_style() -> None:
    """Seaborn "whitegrid" with a colour-blind palette and fonts readable in the HTML book."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind", font_scale=1.05)
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "axes.titlesize": "medium",
        "axes.titleweight": "bold",
        "legend.frameon": False,
    })


def _check_images(x: np.ndarray) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"expected uint8 images (N, H, W, C) with C in {{1, 3}}, got {x.dtype} {x.shape}"
        )


def tile(x: np.ndarray, nrow: int, pad: int = 1, fill: int = 255) -> np.ndarray:
    """Tile images into one (rows*(H+pad)-pad, nrow*(W+pad)-pad, C) uint8 mosaic.

    ``nrow`` is the number of images per row (as in ``torchvision.utils.make_grid``); the
    images are separated by ``pad`` pixels of level ``fill``.
    """
    _check_images(x)
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    n, h, w, c = x.shape
    rows = max(1, math.ceil(n / nrow))
    grid = np.full((rows * (h + pad) - pad, nrow * (w + pad) - pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = x[i]
    return grid


def image_grid(
    x: np.ndarray, nrow: int, ax: Axes | None = None, title: str | None = None
) -> Axes:
    """Show images as a grid with ``nrow`` images per row; grey images use a grey colour map."""
    grid = tile(x, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def image_panels(
    panels: Mapping[str, np.ndarray], nrow: int = 8, ncols: int | None = None,
    panel_size: float = 3.0,
) -> Figure:
    """One figure, one :func:`image_grid` panel per entry of ``panels`` (title -> images)."""
    ncols = ncols or len(panels)
    rows = math.ceil(len(panels) / ncols)
    first = tile(next(iter(panels.values())), nrow)
    aspect = first.shape[0] / first.shape[1]  # panel height / width, plus room for titles
    fig, axes = plt.subplots(rows, ncols, squeeze=False,
                             figsize=(panel_size * ncols, (panel_size * aspect + 0.4) * rows))
    for ax, (title, x) in zip(axes.flat, panels.items(), strict=False):
        image_grid(x, nrow, ax=ax, title=title)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def level_density(x: np.ndarray) -> np.ndarray:
    """Fraction of all pixel values (every channel) at each level 0..255."""
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixel levels, got {x.dtype}")
    counts = np.bincount(x.ravel(), minlength=LEVELS)
    return counts / counts.sum()


def intensity_histograms(
    arrays: Mapping[str, np.ndarray], ax: Axes | None = None, title: str | None = None,
    log: bool = False,
) -> Axes:
    """Overlay the pixel-intensity histograms of several image sets (label -> uint8 images).

    Each curve is the density over the 256 levels, pooled over pixels and channels, drawn as
    a step function; ``log=True`` uses a log y-axis so that both the spike at black and the
    tail of grey images stay visible.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    edges = np.arange(LEVELS + 1) - 0.5
    style = styles(list(arrays))
    for label, x in arrays.items():
        density = level_density(x)
        ax.stairs(density, edges, label=label, linewidth=1.5, **style[label])
        ax.stairs(density, edges, fill=True, alpha=0.15, color=style[label]["color"])
    ax.set_xlim(-0.5, LEVELS - 0.5)
    ax.set_xlabel("pixel level")
    ax.set_ylabel("fraction of pixel values" + (" (log)" if log else ""))
    if log:
        ax.set_yscale("log")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def overlaid_histograms(
    values: Mapping[str, np.ndarray], ax: Axes | None = None, bins: int = 50,
    xlabel: str | None = None, title: str | None = None,
    span: tuple[float, float] = (0.0, 1.0),
) -> Axes:
    """Overlay density histograms of several samples (label -> values) on shared bins.

    The bins span the pooled range of all samples, so the curves are directly comparable;
    each is normalised to integrate to one (e.g. per-image bits/dim of two test sets, or
    per-dimension variances of two datasets). ``span`` = (q_lo, q_hi) limits the bins to
    those quantiles of the pooled values, so that a few extreme outliers do not squash the
    plot (the densities are then those of the values inside the span). Each legend entry
    gives its sample's size, ``n``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    pooled = np.concatenate([np.ravel(v) for v in values.values()])
    edges = np.histogram_bin_edges(pooled, bins=bins, range=tuple(np.quantile(pooled, span)))
    style = styles(list(values))
    for label, v in values.items():
        density, _ = np.histogram(np.ravel(v), bins=edges, density=True)
        ax.stairs(density, edges, label=f"{label} (n = {np.size(v):,})", linewidth=1.5,
                  **style[label])
        ax.stairs(density, edges, fill=True, alpha=0.15, color=style[label]["color"])
    ax.set_ylabel("density")
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def training_curves(log: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Bits/dim over training from a registry ``log.csv``: the running train loss and every
    monitored set (columns ``<name>_bpd``), against images seen."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    images = log["epoch"] if "epoch" in log else log["step"]
    columns = [c for c in log.columns if c.endswith("_bpd")]
    labels = [c.removesuffix("_bpd").replace("_", " ") for c in columns]
    style = styles([label for label in labels if label != "train"])
    for column, label in zip(columns, labels, strict=True):
        look = style.get(label, {"color": "black", "linestyle": "--"})  # the running train loss
        ax.plot(images, log[column], marker="o", markersize=3, label=label, **look)
    ax.set_xlabel("epochs" if "epoch" in log else "steps")
    ax.set_ylabel("bits/dim (lower = more likely)")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def term_histograms(
    values: Mapping[str, Mapping[str, np.ndarray]], terms: Mapping[str, str],
    title: str | None = None, span: tuple[float, float] = (0.005, 0.995),
) -> Figure:
    """One panel per term (``terms``: key -> axis label), each overlaying that term's histogram
    for every set (``values``: set label -> term key -> per-image values)."""
    fig, axes = plt.subplots(1, len(terms), figsize=(5.2 * len(terms), 3.4), squeeze=False)
    for ax, (term, xlabel) in zip(axes[0], terms.items(), strict=True):
        overlaid_histograms({label: v[term] for label, v in values.items()}, ax=ax, bins=60,
                            xlabel=xlabel, span=span)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def ood_curves(curves: Mapping[str, pd.DataFrame], labels: Mapping[str, str]) -> Figure:
    """The paper's Figure 5, one column per model (``curves``: title -> the table of
    :func:`ood_lib.analysis.curves.ood_curves`; ``labels``: its ``train``/``test``/``ood``
    columns -> legend labels, ``{source}`` standing for the train column's source): bits/dim
    over training on top, the OOD - test gap below (< 0: the OOD set is preferred)."""
    fig, axes = plt.subplots(2, len(curves), figsize=(5.2 * len(curves), 6.2), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [2, 1]})
    for (title, c), top, bottom in zip(curves.items(), axes[0], axes[1], strict=True):
        named = {column: labels[column].format(source=c["train source"].iloc[0])
                 for column in ("train", "test", "ood")}
        look = styles(list(named.values()))
        for column, label in named.items():
            top.plot(c["epoch"], c[column], marker="o", markersize=3, label=label, **look[label])
        top.set(ylabel="bits/dim (lower = more likely)", title=title)
        top.legend(fontsize="small")
        bottom.plot(c["epoch"], c["ood − test"], marker="o", markersize=3, color="C3")
        bottom.axhline(0, color="black", linewidth=0.8)
        bottom.set(xlabel="epochs", ylabel="OOD − test (bpd)")
    fig.tight_layout()
    return fig


def learning_curves(runs: Mapping[str, pd.DataFrame], ax: Axes | None = None,
                    title: str | None = None) -> Axes:
    """Bits/dim against compute for one or more training runs of a model (``runs``: run label
    -> :func:`ood_lib.analysis.curves.learning_curve`): one colour per role (train, held-out,
    test, OOD), one line style per run (the first solid, the next dashed, ...); the x-axis says
    whether a run's hours are CPU or wall-clock."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    colours = {role: f"C{i}" for i, role in enumerate(("train", "held-out", "test", "OOD"))}
    for (label, curve), style in zip(runs.items(), ("-", "--", ":", "-."), strict=False):
        clock = curve["clock"].iloc[0]
        for role, part in curve.groupby("role", sort=False):
            ax.plot(part["hours"], part["bpd"], style, color=colours[role], linewidth=1.4,
                    label=f"{role}, {label} ({clock} h)")
    ax.set(xlabel="hours of training (CPU or wall clock, see legend)",
           ylabel="bits/dim (lower = more likely)")
    ax.legend(fontsize="x-small", ncol=2)
    if title:
        ax.set_title(title)
    return ax


def leaderboard(table: pd.DataFrame, anchors: pd.DataFrame, pairs: list[str],
                families: list[str], columns: int | None = None) -> Figure:
    """AUROC with its 95% interval of every method (rows) for every family (markers, in the
    book's family colours) and pair (panels, ``columns`` to a row: all in one row by default,
    1 stacks them for a narrow page), from ``table`` (columns ``pair``, ``method``, ``model``,
    ``auroc``, ``auroc_lo``, ``auroc_hi``); published values from ``anchors`` (columns
    ``pair``, ``method``, ``auroc``; a method ``"complexity"`` marks every ``complexity
    (...)`` row) as black stars. 0.5 is chance; left of it the score ranks the OOD set as
    *more* in-distribution."""
    methods = list(dict.fromkeys(table["method"]))
    columns = columns or len(pairs)
    rows_n = math.ceil(len(pairs) / columns)
    legend_in = 0.6  # inches below the panels for the shared legend
    height = (0.42 * len(methods) + 1.2) * rows_n + legend_in
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.6 * columns if columns > 1 else 6.4, height),
                             sharey=True, squeeze=False)
    offsets = np.linspace(-0.25, 0.25, len(families))
    panels = list(axes.flat)
    for ax in panels[len(pairs):]:
        ax.set_axis_off()
    for ax, pair in zip(panels, pairs, strict=False):
        part = table[table["pair"] == pair]
        look = styles(families)
        for family, dy in zip(families, offsets, strict=True):
            rows = part[part["model"] == family]
            y = [methods.index(m) + dy for m in rows["method"]]
            ax.errorbar(rows["auroc"], y, xerr=[rows["auroc"] - rows["auroc_lo"],
                                                rows["auroc_hi"] - rows["auroc"]],
                        fmt="o", markersize=4, color=look[family]["color"], capsize=2,
                        label=family)
        for _, a in anchors[anchors["pair"] == pair].iterrows():
            for i, m in enumerate(methods):
                if m == a["method"] or (a["method"] == "complexity" and m.startswith("complexity")):
                    ax.plot(a["auroc"], i, marker="*", markersize=11, color="black",
                            linestyle="none", label="published")
        ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlim=(0, 1.02), xlabel="AUROC (OOD positive)", title=pair)
        ax.set_yticks(range(len(methods)), methods)
        ax.invert_yaxis()
    handles, labels = panels[0].get_legend_handles_labels()
    for ax in panels[1:len(pairs)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique),
               bbox_to_anchor=(0.5, 0.0), fontsize="small")
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    return fig
