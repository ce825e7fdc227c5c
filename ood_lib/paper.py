"""Numbers published by Nalisnick et al. (ICLR 2019), shown *beside* ours, always labelled.

Source: ``../shared/reference/paper.md`` (Figure 1 of the paper, Glow, mean bits/dim). Keys are
``(training set, evaluated split)`` with the evaluated split named as in
:mod:`ood_lib.scoring` (``<dataset>_<split>``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Every published number below is recalled from the paper, not checked against its PDF here:
# wherever the book shows one, it is labelled with this.
LABEL = "paper (recalled)"

GLOW_BPD: dict[tuple[str, str], float] = {
    ("fashion_mnist", "fashion_mnist_train"): 2.902,
    ("fashion_mnist", "fashion_mnist_test"): 2.958,
    ("fashion_mnist", "mnist_test"): 1.833,
    ("cifar10", "cifar10_train"): 3.386,
    ("cifar10", "cifar10_test"): 3.464,
    ("cifar10", "svhn_test"): 2.389,
}

CITATION = ("Nalisnick, Matsukawa, Teh, Gorur, Lakshminarayanan. Do Deep Generative Models Know "
            "What They Don't Know? ICLR 2019 (arXiv:1810.09136).")

# Section 5's worked example (recalled): per-channel sums over pixels of
# sigma^2_CIFAR10 - sigma^2_SVHN, pixels scaled to [0, 1], channels R, G, B.
CHANNEL_VARIANCE_SUMS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("cifar10", "svhn"): (12.3, 6.5, 14.5),
}


@dataclass(frozen=True)
class Anchor:
    """A published AUROC of a remedy, shown beside ours with its source."""

    method: str  # as the remedies chapter names its scores ("complexity": any of its codecs)
    family: str  # registry name of the closest family of ours ("pixelcnn" for PixelCNN++)
    model: str  # the model the source ran
    trained_on: str
    auroc: float
    source: str


# Published AUROCs of the remedies (../shared/reference/paper.md); "recalled" = from memory of
# the paper, not checked against it; "about" values are given as their sources round them.
ANCHORS: tuple[Anchor, ...] = (
    Anchor("likelihood ratio", "pixelcnn", "PixelCNN++", "fashion_mnist", 0.994,
           "Ren et al. 2019 (recalled)"),
    Anchor("likelihood ratio", "pixelcnn", "PixelCNN++", "cifar10", 0.93,
           "Ren et al. 2019 (recalled, about)"),
    Anchor("complexity", "glow", "Glow", "cifar10", 0.950,
           "Serra et al. 2020, as quoted by the replication"),
    Anchor("complexity (PNG)", "glow", "Glow", "cifar10", 0.784,
           "independent replication, PNG level 9 (boschresearch/hierarchical_anomaly_detection)"),
    Anchor("DoSE-KDE", "glow", "Glow", "cifar10", 0.97,
           "Morningstar et al. 2021, as quoted by later work (about)"),
    Anchor("DoSE-KDE", "vae", "VAE", "fashion_mnist", 1.00,
           "Morningstar et al. 2021, as quoted by later work (about)"),
    Anchor("WAIC", "glow", "5 Glows", "cifar10", 1.0,
           "Choi et al. 2018 (recalled, near 1.0; far lower in re-runs)"),
)
