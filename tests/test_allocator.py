"""The glibc allocator settings are in effect: repeated large allocations stop page-faulting."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

import ood_lib
from ood_lib import allocator

_PROBE = """
import resource, sys
import torch
if sys.argv[1] == "1":
    import ood_lib  # applies the settings at import
torch.set_num_threads(1)
x, w = torch.randn(64, 64, 32, 32), torch.randn(64, 64, 3, 3)  # a 16 MiB activation, a conv
torch.nn.functional.conv2d(torch.relu(x), w, padding=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # what batched evaluation does: the same buffers, allocated and freed
    y = torch.nn.functional.conv2d(torch.relu(x), w, padding=1)
    del y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(with_ood_lib: bool) -> int:
    env = {**os.environ, "PYTHONPATH": str(ood_lib.paths.PROJECT_ROOT)}
    env.pop(allocator.SKIP_ENV, None)
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if with_ood_lib else "0"], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.slow
@pytest.mark.skipif(not allocator.ACTIVE, reason="glibc mallopt not available here")
def test_importing_ood_lib_stops_repeated_page_faults() -> None:
    default, configured = _faults(False), _faults(True)
    # 10 rounds of two 16 MiB buffers: ~80,000 faults of 4 KiB pages if each is mapped afresh
    pages = 10 * 2 * (16 << 20) // resource.getpagesize()
    assert default > pages // 2, "glibc's default maps the buffers afresh every round"
    assert configured < default // 5, "with the settings the buffers are reused"
