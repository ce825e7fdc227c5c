"""ood_lib: the library behind the executable study of Nalisnick et al. (ICLR 2019),
*Do Deep Generative Models Know What They Don't Know?*

Imports flow one way, from the leaves up (each module imports only modules listed above it):

Leaves (numpy at most; no other ``ood_lib`` module but the catalogue)
- ``allocator``   glibc settings that stop batched evaluation from page-faulting (set at import)
- ``paths``       where the project keeps data, checkpoints, builds and results
- ``catalogue``   every name: datasets, their geometry and pairs, families, codecs, profiles
- ``records``     the typed results chapters hand each other
- ``paper``       the paper's claims and published numbers, each with its source
- ``transforms``  bit-depth reduction, dequantization, grey <-> RGB, noise for backgrounds
- ``metrics``     AUROC, AUPR, FPR@95%TPR, bootstrap intervals, the detection row
- ``scores``      per-image OOD scores from per-image numbers (one function, one naming)
- ``compress``    lossless codecs: the compressors of the input-complexity score
- ``results``     saving and loading results (typed records, arrays) between chapters

Data and models
- ``data/``       the datasets: files and checksums, download, the loaded splits, statistics
- ``models/``     the families behind one interface (``base`` owns bits/dim and evaluation):
                  Glow (and constant-volume Glow), PixelCNN, VAE
- ``training/``   the one training loop, data-parallel replicas, the profiles' budgets
- ``zoo/``        the trained models a run needs: registry, ensemble members, background models
- ``scoring``     the image sets a model is scored on, the content-keyed score cache, pairs

Analyses, reports and commands
- ``analysis/``   analyses of trained models: arrays and records in, records out
- ``report/``     the scorecard, the at-a-glance page, chapter tables and figures
- ``ingest``      the reader's own images brought to a model's geometry
- ``cli``         ``ood-score`` / ``python -m ood_lib score``: score the reader's images

The book runner (``book_runner/``, beside this package) executes the chapters and builds the
HTML; it imports no torch.
"""

from ood_lib import allocator  # noqa: F401  (glibc: keep freed buffers; see its docstring)

__version__ = "0.1.0"
