"""Why a Glow step takes the time it takes on this CPU: the diagnostics of ``bench_glow.py``.

- :func:`machine`: the CPU model and its vector flags (``lscpu``), torch's threads, the CPUs the
  process may run on (affinity) and threads per core;
- :func:`onednn_summary`: one training step run in a fresh process with ``ONEDNN_VERBOSE=1``:
  the oneDNN primitives executed, by kind and implementation, and the layout reorders among
  them (a reorder copies a tensor into another memory layout and computes nothing);
- :func:`layer_split`: the forward time of one training step split by layer kind (coupling
  networks, 1x1 convolutions, actnorm, priors) with module hooks, and the operators that take
  the most time over forward and backward (``torch.profiler``);
- :func:`variants`: training and evaluation images/s of the same Glow in fresh processes under
  each setting tried (denormals flushed, ``ONEDNN_MAX_CPU_ISA=AVX2``, NCHW instead of
  channels-last, one thread per physical core), interleaved with the default setting.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from ood_lib.models.glow import ActNorm, Coupling, Glow, InvConv1x1, SplitPrior
from ood_lib.paths import PROJECT_ROOT

FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                     "amx_tile", "amx_bf16")
LAYER_KINDS: dict[str, type[nn.Module]] = {"coupling networks": Coupling,
                                           "1x1 convolutions": InvConv1x1, "actnorm": ActNorm,
                                           "split priors": SplitPrior}


def machine() -> list[tuple[str, str]]:
    """Rows describing the CPU and the threads torch uses."""
    try:
        lscpu = dict(line.split(":", 1) for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        lscpu = {}
    flags = set(lscpu.get("Flags", "").split())
    return [
        ("CPU", f"{lscpu.get('Model name', '?').strip()} ({lscpu.get('Vendor ID', '?').strip()})"),
        ("vector flags", " ".join(f for f in FLAGS_OF_INTEREST if f in flags) or "none found"),
        ("threads per core", lscpu.get("Thread(s) per core", "?").strip()),
        ("CPUs allowed (affinity)", ",".join(map(str, sorted(os.sched_getaffinity(0))))),
        ("torch threads", f"{torch.get_num_threads()} (OMP_NUM_THREADS="
                          f"{os.environ.get('OMP_NUM_THREADS', 'unset')})"),
        ("oneDNN", f"available {torch.backends.mkldnn.is_available()}, "
                   f"ISA {torch.backends.cpu.get_cpu_capability()}"),
    ]


# A training step of the cpu-profile CIFAR-10 Glow, run by :func:`onednn_summary` and
# :func:`variants` in a fresh process (oneDNN reads its environment once, at start).
_STEP_SCRIPT = r"""
import json, sys, time, torch
from ood_lib.models import glow
from ood_lib.models.glow import Glow, GlowConfig
from ood_lib.zoo import families
setting = json.loads(sys.argv[1])
if not setting.get("channels_last", True):  # squeeze's output made NCHW: every layer after it too
    channels_last_squeeze = glow.squeeze
    glow.squeeze = lambda x: channels_last_squeeze(x).contiguous()
if setting.get("flush_denormal"):
    torch.set_flush_denormal(True)
if setting.get("threads"):
    torch.set_num_threads(setting["threads"])
torch.manual_seed(0)
model = Glow(GlowConfig(**families.model_config("glow", "cifar10", "cpu")))
x = torch.rand(64, 3, 32, 32) - 0.5
opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
def step():
    opt.zero_grad(set_to_none=True)
    (-model.log_prob_parts(x)["log_px"].mean()).backward()
    opt.step()
with torch.no_grad():
    model.log_prob_parts(x)
step()
if setting.get("verbose_step"):
    print("=== STEP ===", flush=True)
    step()
    sys.exit(0)
xe = torch.rand(256, 3, 32, 32) - 0.5
def rate(fn, n, calls):
    fn(); t = time.perf_counter()
    for _ in range(calls): fn()
    return n * calls / (time.perf_counter() - t)
with torch.no_grad():
    ev = rate(lambda: model.log_prob_parts(xe), 256, 2)
print(json.dumps({"train": rate(step, 64, 4), "eval": ev}))
"""


def _run(setting: dict, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _STEP_SCRIPT, json.dumps(setting)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})})


def onednn_summary() -> list[tuple[str, str]]:
    """oneDNN primitives of one training step (fresh process, ``ONEDNN_VERBOSE=1``): count and
    milliseconds by kind, implementations, and the layout reorders among them."""
    out = _run({"verbose_step": True}, {"ONEDNN_VERBOSE": "1"}).stdout
    # onednn_verbose,v1,primitive,exec,cpu,KIND,IMPL,PROP,MEMORY,ATTR,AUX,SHAPES,MS
    rows = [ln.split(",") for ln in out.split("=== STEP ===", 1)[-1].splitlines()
            if ln.startswith("onednn_verbose") and ",exec," in ln]
    if not rows:
        return [("oneDNN primitives", "none executed (torch used its own kernels)")]
    count, ms = Counter(r[5] for r in rows), Counter()
    for r in rows:
        ms[r[5]] += float(r[-1])
    impls = Counter(f"{r[5]} {r[6]}" for r in rows)
    reorders = [r for r in rows if r[5] == "reorder"]
    weights = sum(1 for r in reorders if r[-2].count("x") == 3 and r[-2].split("x")[0] != "64")
    return [("oneDNN primitives per step", ", ".join(
                f"{k} {count[k]} ({ms[k]:.0f} ms)" for k, _ in count.most_common())),
            ("implementations", ", ".join(f"{k} {v}" for k, v in impls.most_common(5))),
            ("layout reorders per step", f"{len(reorders)}, {weights} of them of weights "
                                         f"({ms['reorder'] / sum(ms.values()):.0%} of oneDNN time)")]


def layer_split(model: Glow, step: Callable[[], None]) -> list[tuple[str, str]]:
    """Forward seconds of one ``step`` by layer kind (hooks; nested kinds are not double
    counted: a coupling's network is inside the coupling) and the top operators."""
    spent: Counter = Counter()
    starts: dict[int, float] = {}

    def pre(module: nn.Module, _inputs: object) -> None:
        starts[id(module)] = time.perf_counter()

    def post(kind: str) -> Callable:
        def hook(module: nn.Module, _inputs: object, _output: object) -> None:
            spent[kind] += time.perf_counter() - starts.pop(id(module))
        return hook

    handles = [h for m in model.modules() for kind, cls in LAYER_KINDS.items() if isinstance(m, cls)
               for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post(kind)))]
    t0 = time.perf_counter()
    step()
    total = time.perf_counter() - t0
    for h in handles:
        h.remove()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    own = sum(e.self_cpu_time_total for e in prof.key_averages())
    rows = [("step (forward + backward)", f"{total * 1e3:.0f} ms")]
    rows += [(f"forward: {k}", f"{v * 1e3:.0f} ms ({v / total:.0%} of the step)")
             for k, v in spent.most_common()]
    rows += [(f"op: {e.key}", f"{e.self_cpu_time_total / own:.0%} of CPU time") for e in ops]
    return rows


VARIANTS: dict[str, tuple[dict, dict[str, str]]] = {
    "default (channels-last)": ({}, {}),
    "denormals flushed": ({"flush_denormal": True}, {}),
    "ONEDNN_MAX_CPU_ISA=AVX2": ({}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "NCHW end to end": ({"channels_last": False}, {}),
    "one thread per physical core": ({"threads": max(1, (os.cpu_count() or 2) // 2)}, {}),
}


def variants(rounds: int = 2) -> list[tuple[str, str]]:
    """Training and evaluation images/s per setting (fresh process each), the default run
    between every other setting so that drifting load hits all alike; median over rounds."""
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            for run in ([name] if name.startswith("default") else [name, "default (channels-last)"]):
                s, e = VARIANTS[run]
                proc = _run(s, e)
                if proc.returncode == 0:
                    results[run].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = {k: statistics.median(r[k] for r in results["default (channels-last)"])
            for k in ("train", "eval")}
    rows = []
    for name, runs in results.items():
        if not runs:
            rows.append((name, "failed to run"))
            continue
        med = {k: statistics.median(r[k] for r in runs) for k in ("train", "eval")}
        rows.append((name, f"train {med['train']:.0f} img/s ({med['train'] / base['train']:.2f}x),"
                           f" eval {med['eval']:.0f} img/s ({med['eval'] / base['eval']:.2f}x)"))
    return rows
