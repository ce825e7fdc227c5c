"""Numbers published by Nalisnick et al. (ICLR 2019), shown *beside* ours, always labelled.

Source: ``../shared/reference/paper.md`` (Figure 1 of the paper, Glow, mean bits/dim). Keys are
``(training set, evaluated split)`` with the evaluated split named as in
:mod:`ood_lib.scoring` (``<dataset>_<split>``).
"""

from __future__ import annotations

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
