"""One palette for the whole book: a dataset or a family has the same colour in every figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from ood_lib.report import plots  # noqa: E402


def test_every_dataset_and_family_has_its_own_colour() -> None:
    colours = list(plots.DATASET_COLOURS.values()) + list(plots.FAMILY_COLOURS.values())
    assert len(set(colours)) == len(colours)


def test_labels_find_their_dataset_or_family() -> None:
    d, f = plots.DATASET_COLOURS, plots.FAMILY_COLOURS
    assert plots.colour("SVHN-Test") == plots.colour("svhn test") == d["svhn"]
    assert plots.colour("FashionMNIST-Train") == plots.colour("fashion mnist val") == d["fashion_mnist"]
    assert plots.colour("NotMNIST-Test") == d["notmnist"] != plots.colour("MNIST-Test")
    assert plots.colour("CV-Glow") == plots.colour("glow_cv") == f["glow_cv"]
    assert plots.colour("uniform noise") is None


def test_splits_of_one_dataset_share_its_colour_and_differ_by_line_style() -> None:
    look = plots.styles(["CIFAR10-Train", "CIFAR10-Test", "SVHN-Test", "noise"])
    assert look["CIFAR10-Train"]["color"] == look["CIFAR10-Test"]["color"]
    assert look["CIFAR10-Train"]["linestyle"] != look["CIFAR10-Test"]["linestyle"]
    assert look["noise"]["color"] not in {look["SVHN-Test"]["color"], look["CIFAR10-Test"]["color"]}


def test_plotting_functions_draw_in_the_book_palette() -> None:
    ax = plots.overlaid_histograms({"SVHN-Test": np.arange(10.0), "CIFAR10-Test": np.ones(10)})
    drawn = {p.get_label(): to_rgb(p.get_edgecolor()) for p in ax.patches
             if p.get_label() and not p.get_label().startswith("_")}
    assert drawn == {"SVHN-Test (n = 10)": plots.DATASET_COLOURS["svhn"],
                     "CIFAR10-Test (n = 10)": plots.DATASET_COLOURS["cifar10"]}
    table = pd.DataFrame([{"pair": "p", "method": "NLL", "model": m, "auroc": 0.4, "auroc_lo": 0.3,
                           "auroc_hi": 0.5} for m in ("PixelCNN", "VAE")])
    fig = plots.leaderboard(table, pd.DataFrame(columns=["pair", "method", "auroc"]), ["p"],
                            ["PixelCNN", "VAE"])
    lines = {c.get_label(): to_rgb(c.lines[0].get_color()) for c in fig.axes[0].containers}
    assert lines == {"PixelCNN": plots.FAMILY_COLOURS["pixelcnn"], "VAE": plots.FAMILY_COLOURS["vae"]}
    plt.close("all")


def test_leaderboard_stacks_its_panels_on_request() -> None:
    table = pd.DataFrame([{"pair": p, "method": m, "model": "Glow", "auroc": 0.4,
                           "auroc_lo": 0.3, "auroc_hi": 0.5} for p in ("a", "b", "c")
                          for m in ("NLL", "WAIC", "DoSE-KDE", "complexity (PNG)")])
    anchors = pd.DataFrame(columns=["pair", "method", "auroc"])
    wide = plots.leaderboard(table, anchors, ["a", "b", "c"], ["Glow"])
    tall = plots.leaderboard(table, anchors, ["a", "b", "c"], ["Glow"], columns=1)
    assert [ax.get_title() for ax in tall.axes] == ["a", "b", "c"]
    assert wide.get_figwidth() > wide.get_figheight() and tall.get_figheight() > tall.get_figwidth()
    plt.close("all")
