"""ood_lib: the library behind the executable study of Nalisnick et al. (ICLR 2019),
*Do Deep Generative Models Know What They Don't Know?*

Modules, one concept each:

- ``paths``      where the project keeps data, checkpoints, builds and results
- ``data``       the datasets (offline ``.npz`` copies or torchvision downloads), checksums, coverage
- ``transforms`` dequantization, bit-depth reduction and the grey <-> RGB conversions
- ``glow``       the Glow flow of Kingma & Dhariwal (2018) with exact ``log_pz`` and ``log_det``
- ``likelihood`` bits/dim and per-image evaluation of any density model
- ``train``      the one training loop every model in the book uses
- ``registry``   "model M on dataset D under profile P": load the checkpoint or train it
- ``results``    the JSON/NPZ results each chapter saves for the later chapters
- ``plots``      figures shared by the chapters
- ``book``       the papermill + jupyter-book runner
"""

__version__ = "0.1.0"
