"""Analyses of trained models, one concept per module:

- ``decomposition``  which term of the change of variables prefers the OOD data (Figure 4)
- ``curves``         likelihood of train, test and OOD data over training (Figure 5)
- ``families``       PixelCNN and VAE beside Glow (Figure 3), the VAE bound against k
- ``second_order``   the second-order expansion of log p (Section 5), graying, contrast
- ``validity``       where that expansion holds: shrinking sweeps, moving expansion points,
                     the exact path-integral account of the gap
- ``closed_form``    the constant-volume Glow's closed forms: the paper's two readings, the
                     exact within-pixel and all-levels forms
- ``explanations``   explanations since the paper: coupling-layer predictions (Kirichenko et
                     al.), changes of coordinates (Le Lan and Dinh)
- ``remedies``       the OOD scores of :mod:`ood_lib.scores` on the book's models: detection
                     tables, typicality over batch sizes, companions, the old rule's inversion
- ``dose``           DoSE (Morningstar et al.): per-family statistics, KDE and one-class SVM
"""
