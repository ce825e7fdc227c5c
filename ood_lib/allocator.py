"""Keep freed memory in the process instead of returning it to the kernel (glibc only).

Evaluating a model in batches allocates and frees the same large activation buffers again and
again. By default glibc serves every allocation above 128 KiB-32 MiB (its dynamic mmap
threshold) with a fresh ``mmap`` and unmaps it on ``free``, and trims the heap top back to the
kernel: each batch then *page-faults its buffers in again*. Measured on the 2-core project
machine, scoring 2,560 SVHN images with the CIFAR-10 Glow at batch 256 spent 9.1 of 13.2 s in
the kernel (4.2 million minor page faults).

:func:`configure` sets, with ``mallopt``, ``M_MMAP_MAX = 0`` (large blocks come from the heap,
which is reused), a 1 GiB ``M_TRIM_THRESHOLD`` (freed memory stays mapped) and a 64 MiB
``M_TOP_PAD``. It runs when :mod:`ood_lib` is imported, so every entry point (the book runner,
the chapters' kernels, training, benchmarks, the command line) has it. Peak memory is unchanged;
memory freed after a peak is kept for reuse. Set ``OOD_GLIBC_MALLOC_DEFAULTS=1`` to skip it
(the benchmark does, to measure the difference).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
SKIP_ENV = "OOD_GLIBC_MALLOC_DEFAULTS"


def configure() -> bool:
    """Apply :data:`SETTINGS`; False where there is no glibc or the user opted out."""
    if os.environ.get(SKIP_ENV) == "1":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())


ACTIVE = configure()
