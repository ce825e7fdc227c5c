"""ood_lib: the library behind the executable study of Nalisnick et al. (ICLR 2019),
*Do Deep Generative Models Know What They Don't Know?*

Modules, one concept each:

- ``allocator``  glibc settings that stop batched evaluation from page-faulting (set at import)
- ``paths``      where the project keeps data, checkpoints, builds and results
- ``data``       the datasets (offline ``.npz`` copies or torchvision downloads), checksums, coverage
- ``transforms`` dequantization, bit-depth reduction and the grey <-> RGB conversions
- ``models``     the model families behind one interface: Glow (and constant-volume Glow),
                 PixelCNN, VAE
- ``analysis``   analyses of trained models: decomposition, training curves, families, second
                 order, remedies (OOD scores that work)
- ``likelihood`` bits/dim and per-image evaluation of any density model
- ``train``      the one training loop every model in the book uses
- ``distributed`` data-parallel training under torchrun (DDP), results independent of N
- ``registry``   "model M on dataset D under profile P": load the checkpoint or train it
- ``results``    the JSON/NPZ results each chapter saves for the later chapters
- ``scoring``    the image sets a model is scored on, and the content-keyed score cache
- ``metrics``    AUROC, AUPR, FPR@95%TPR
- ``plots``      figures shared by the chapters
- ``display``    how chapters show tables and numbers
- ``scorecard``  every claim of the paper judged from the chapters' saved results
- ``cli``        ``ood-score`` / ``python -m ood_lib score``: the reader's own images
- ``book``       the papermill + jupyter-book runner
"""

from ood_lib import allocator  # noqa: F401  (glibc: keep freed buffers; see its docstring)

__version__ = "0.1.0"
