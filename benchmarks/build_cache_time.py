"""Where a build's compute time went: the wall seconds of every content-keyed cache entry.

:func:`ood_lib.scoring.cached` stores, with each entry it computes, the wall seconds the
computation took (``cache_seconds``). This reads the entries of a results folder (by default
``_build/results/<profile>`` of this checkout) and prints them summed by what was computed:
scores per model checkpoint (images, seconds, images/s), compressed lengths per codec, and the
other per-image analyses (Hessians, intervention sweeps, DoSE statistics) per kind, then the
total, to set beside the chapters' wall times that the runner prints. Entries a build loaded
rather than computed (a warm rebuild), or written before the seconds were kept, are counted
apart.

Run after a build: ``python benchmarks/build_cache_time.py [--profile cpu] [--results DIR]``.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from ood_lib import catalogue, paths


def group(label: str) -> str:
    """What an entry computed, from its label: ``scores <model key>``, ``bits <codec>``,
    ``dose <model key>`` or the analysis' kind (``hessian-glow``, ...)."""
    kind, _, rest = label.partition("-")
    if kind in ("scores", "dose"):  # <kind>-<model>-<dataset>-<profile>-<hash>[.stepN]-<set>
        return f"{kind} {'-'.join(rest.split('-')[:4])}"
    if kind == "bits":  # bits-<codec>-<images hash>
        return f"bits {rest.split('-')[0]}"
    return "-".join(label.split("-")[:2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=catalogue.PROFILES)
    parser.add_argument("--results", type=Path, help="a results folder (default: this build's)")
    args = parser.parse_args(argv)
    folder = args.results or paths.results_dir(args.profile)
    seconds, images, entries = (collections.Counter() for _ in range(3))
    untimed = 0
    for path in sorted(folder.glob("cache-*.npz")):
        with np.load(path, allow_pickle=False) as f:
            if "cache_seconds" not in f.files:
                untimed += 1
                continue
            g = group(str(f["cache_label"]))
            seconds[g] += float(f["cache_seconds"])
            first = next(k for k in f.files if not k.startswith("cache_"))
            images[g] += len(f[first]) if f[first].ndim else 1
            entries[g] += 1
    print(f"{folder}: {sum(entries.values())} timed cache entries, {untimed} untimed "
          f"(loaded, or saved before the seconds were kept)")
    print(f"{'computed':48s} {'entries':>7s} {'images':>8s} {'seconds':>8s} {'images/s':>9s}")
    for g, s in seconds.most_common():
        print(f"{g:48s} {entries[g]:7d} {images[g]:8,d} {s:8.1f} {images[g] / s:9.0f}")
    print(f"{'total':48s} {sum(entries.values()):7d} {sum(images.values()):8,d} "
          f"{sum(seconds.values()):8.1f}")


if __name__ == "__main__":
    main()
