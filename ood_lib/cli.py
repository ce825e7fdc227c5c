"""``ood-score``: score your own images with one of the book's shipped models.

Usage (the two forms are the same command)::

    python -m ood_lib score --model glow --trained-on cifar10 PATH [--out scores.csv]
    ood-score --model glow --trained-on cifar10 PATH [--profile cpu] [--data-root DIR]

``PATH`` is a folder of image files (``.png .jpg .jpeg .bmp .gif .tif .tiff .webp``, case
ignored; sub-folders only with ``--recursive``; other files are ignored) or an ``.npz`` file
with an ``x`` array of uint8 images ``(N, H, W, C)`` (C = 1, 3 or 4) or ``(N, H, W)``, like
the project's data files. The model is loaded from its checkpoint with
:func:`ood_lib.zoo.registry.get` and ``allow_training=False``: this command never trains a model; a
missing checkpoint is an error that names the command that trains it.

Conversion to the model's geometry
----------------------------------
Every image is brought to the geometry of the model's training set
(:func:`ood_lib.catalogue.geometry`: CIFAR-10 3x32x32 RGB, the grey sets 1x28x28) by
:mod:`ood_lib.ingest` (orientation, 8-bit mode, alpha, channels, size, in that order); the
CSV's ``converted`` column says which steps each image took.

What is reported
----------------
Unreadable files are listed and skipped (and counted); no readable image at all is an error.
The in-distribution reference is the model's test set: its first ``--test-images`` images
(default 2,000, fewer where fewer are here), scored with :func:`ood_lib.scoring.score` and so
cached. The scores are the book's (:func:`ood_lib.scores.per_image_scores`, one function for
both), each oriented larger = more OOD and named by its key in
:data:`ood_lib.scores.METHOD_NAMES`:

- ``bpd``: the raw likelihood, negative log-likelihood in bits/dim (the paper's baseline);
- ``typicality``: the typicality test with batches of M = 1, |-log p(x) - H_hat| in nats,
  with H_hat the mean -log p of the model's held-out images (left out for a model that
  trained on them);
- ``complexity_png``: input complexity S(x) = D bpd(x) - L(x) in bits (D = C H W), with L(x)
  the PNG size (``png_bits``, the whole file) of the image exactly as the model saw it;
- ``dos_joint_kde``: the density of states, a joint KDE of the model's additive parts fitted
  on the same held-out images;
- ``dose_kde`` and ``dose_svm``: DoSE (Morningstar et al.), the family's statistics
  (:mod:`ood_lib.analysis.dose`) with per-statistic KDEs or a one-class SVM fitted on the first
  2,000 held-out images;
- where the model's companions are shipped (:mod:`ood_lib.zoo.ensemble`): ``likelihood_ratio``,
  log p_bg(x) - log p(x) in nats with its background model (PixelCNN and Glow,
  :mod:`ood_lib.zoo.background`), and ``waic``, -WAIC(x) over a Glow's seed ensemble
  (Fashion-MNIST, notMNIST and CIFAR-10, :data:`ood_lib.zoo.ensemble.ENSEMBLES`). A missing
  companion leaves its score out with a line saying which score, why
  and the command that trains it; it is never trained.

For each, the AUROC of your images (the positive class) against the test set, with a 95%
bootstrap interval (:func:`ood_lib.metrics.detection_row`): 0.5 = no different from
the test set, 1 = every one of your images scores above every test image, below 0.5 = your
images look *more* in-distribution than the test set. With a handful of images the interval
is wide: an AUROC needs at least a few images to mean anything.

The per-image CSV (``--out``, default ``ood_scores.csv`` in the current folder) has columns
``file, width, height, mode, converted, log_px_nats, png_bits``, then each score computed
(``bpd``, ``typicality``, ``complexity_png``, ``dos_joint_kde``, ``dose_kde``, ``dose_svm``,
``likelihood_ratio``, ``waic``); ``width``, ``height``
and ``mode`` are the image's as stored in the file (before orientation). It is written to a
temporary file in the same folder and moved into place with ``os.replace``: a run that fails
leaves no CSV, nor any part of one.

Exit status: 0 on success; 2 on a usage error, an unknown model or dataset, a missing
checkpoint or data file, or no readable image (the message, no traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ood_lib import catalogue, compress, metrics, scores, scoring
from ood_lib.analysis import dose, remedies
from ood_lib.data import files, image_sets, store
from ood_lib.data.image_sets import EvalSet
from ood_lib.ingest import BACKGROUNDS, PROGRESS_MIN_IMAGES, STEPS, ImageInputError, load_path
from ood_lib.models.base import evaluate
from ood_lib.zoo import ensemble, families, registry
from ood_lib.zoo.ensemble import Companions

DEFAULT_TEST_IMAGES = 2_000
DEFAULT_OUT = "ood_scores.csv"
# The CSV: the image's own columns, its log-likelihood and PNG length, then every score
# computed, keyed as ood_lib.scores.METHOD_NAMES.
IMAGE_COLUMNS = ["file", "width", "height", "mode", "converted"]
CSV_COLUMNS = IMAGE_COLUMNS + ["log_px_nats", "png_bits"]
# Below this many images the summary warns that the AUROC says little.
FEW_IMAGES = 10


class UsageError(Exception):
    """A problem the user can fix (bad path, no images, missing checkpoint): exit status 2."""


# --- scoring --------------------------------------------------------------------------------


def _reference(sets: list[EvalSet], role: str, profile: str, asked: int) -> EvalSet:
    """The set of ``role``, renamed when it holds a different number of images than the book
    scores under this profile, so that its cache entry never replaces the book's."""
    s = next(s for s in sets if s.role == role)
    book_cap = image_sets.MAX_IMAGES[profile]
    whole_split = s.n < asked  # fewer images here than asked for: the set is the whole split
    same = book_cap == s.n or (whole_split and (book_cap is None or book_cap >= s.n))
    return s if same else replace(s, name=f"{s.name}-first{s.n}")


def score_images(trained: registry.TrainedModel, x: np.ndarray, test: EvalSet,
                 held_out: EvalSet | None, profile: str, bundle: Companions
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """Per-image scores (:func:`ood_lib.scores.per_image_scores`, the book's) of the user's
    images ``x`` (NHWC) and of the test set, with ``log_px_nats`` and ``png_bits``, and H_hat
    (fitted on ``held_out``; NaN, and no fitted score, without one); the likelihood ratio and
    WAIC where ``bundle`` has the models they need."""
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    n_dims = int(np.prod(images.shape[1:]))
    show = len(images) >= PROGRESS_MIN_IMAGES
    user = evaluate(trained.model, images, progress="scoring your images" if show else False)
    ref = scoring.score(trained, test, profile)
    fit = scoring.score(trained, held_out, profile) if held_out is not None else None
    h_hat = scores.fitted_entropy(fit["log_px"]) if fit is not None else float("nan")
    # the user's images are not a book set: their companions' scores are not cached
    more = {"user": bundle.log_px(lambda m: evaluate(m.model, images)["log_px"], user["log_px"]),
            "test": remedies.companion_log_px(bundle, test, profile, ref["log_px"])}
    # PNG lengths: the test set's from the content-keyed cache the book fills
    png = {"user": compress.compressed_bits(images.numpy(), "png"),
           "test": remedies.set_bits(test, "png", profile)}
    out = {name: {"log_px_nats": np.asarray(parts["log_px"], float), "png_bits": png[name],
                  **scores.per_image_scores(parts, fit, n_dims, {"png": png[name]},
                                            trained.model.additive_parts, more[name])}
           for name, parts in (("user", user), ("test", ref))}
    if fit is not None:  # DoSE: the family's statistics, the estimators fitted on held-out images
        fit_stats = dose.fit_statistics(trained, held_out, fit, profile)
        family = trained.spec.model
        stats = {"user": dose.statistics(family, user, dose.images_statistics(trained, images)),
                 "test": dose.statistics(family, ref, dose.extra_statistics(trained, test, profile))}
        for name, x in stats.items():
            out[name].update(dose.scores_of(fit_stats, x))
    return out["user"], out["test"], h_hat


def write_csv_atomic(frame: pd.DataFrame, out: Path) -> None:
    """Write ``frame`` to a temporary file beside ``out`` and ``os.replace`` it into place; on
    any failure the temporary file is removed and ``out`` is untouched."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- command --------------------------------------------------------------------------------


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "ood-score",
        description="Score images (a folder, or an .npz with an 'x' array) for being out of "
                    "distribution under one of the book's shipped models: the book's per-image "
                    "scores (bits/dim, typicality, input complexity, density of states, DoSE and, "
                    "where the companions are shipped, the likelihood ratio and WAIC), each "
                    "with its AUROC against the model's test set, and a per-image CSV. Never "
                    "trains a model.",
        epilog="How images are converted to the model's geometry, in this order:\n\n"
               + STEPS + "\nAn .npz whose images already have the geometry is used as is; its "
               "other images go through steps 2-5.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="PATH", type=Path,
                        help="a folder of images or an .npz file with an 'x' array")
    parser.add_argument("--model", required=True, choices=sorted(families.MODELS),
                        help="model family")
    parser.add_argument("--trained-on", required=True, choices=sorted(catalogue.PAIRS),
                        dest="dataset", help="the model's training set (sets its geometry)")
    parser.add_argument("--profile", default="cpu", choices=catalogue.PROFILES,
                        help="which checkpoint: cpu (shipped, default), paper, or smoke (tests)")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), metavar="CSV",
                        help=f"per-image CSV (default: {DEFAULT_OUT} in the current folder)")
    parser.add_argument("--data-root", type=Path, default=None, metavar="DIR",
                        help="offline data root (default: $OOD_DATA_ROOT or ../shared/data)")
    parser.add_argument("--test-images", type=int, default=DEFAULT_TEST_IMAGES, metavar="N",
                        help="test images of the model's dataset to compare against "
                             f"(default {DEFAULT_TEST_IMAGES:,})")
    parser.add_argument("--alpha-background", choices=sorted(BACKGROUNDS), default="white",
                        help="background that transparent pixels are composited over")
    parser.add_argument("--recursive", action="store_true",
                        help="also read images in sub-folders")
    return parser


def _fmt_auroc(row: dict[str, float]) -> str:
    return f"{row['auroc']:.3f}  [{row['auroc_lo']:.3f}, {row['auroc_hi']:.3f}]"


def run(args: argparse.Namespace) -> Path:
    """The command: load, score, summarise, write the CSV. Returns the CSV's path."""
    if args.test_images < 2:
        raise UsageError("--test-images must be at least 2")
    out = args.out.expanduser().resolve()
    if not out.parent.is_dir():
        raise UsageError(f"the folder of --out {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name")
    channels, size = catalogue.geometry(args.dataset)
    background = BACKGROUNDS[args.alpha_background]
    loaded = load_path(args.path, channels, size, background, args.recursive)
    for name, reason in loaded.skipped:
        print(f"skipped {name}: {reason}")

    try:
        trained = registry.get(args.model, args.dataset, args.profile, data_root=args.data_root,
                               allow_training=False, progress=False)
        sets = image_sets.paper_sets(args.dataset, args.profile, args.data_root, args.test_images)
    except (registry.CheckpointError, files.DataError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    test = _reference(sets, "test", args.profile, args.test_images)
    try:  # what H_hat is fitted on: the held-out split, unless the model trained on it
        held_out = image_sets.from_split(trained.fit_split(store.load(args.dataset, "val",
                                                                  args.data_root)),
                                      "val", channels, None)
        fit_note = f"{held_out.label}, {held_out.coverage}"
    except store.FitDataError as exc:
        held_out, fit_note = None, f"not fitted ({exc}); typicality left out"
    if args.dataset == "notmnist":  # its held-out images are the even test positions
        test = replace(test, name=f"{test.name}-odd", label=f"{test.label} (odd positions)",
                       images=test.images[1::2], coverage=f"{len(test.images[1::2]):,} images")
    bundle = ensemble.companions(args.model, args.dataset, args.profile, args.data_root,
                                 allow_training=False)
    user, ref, h_hat = score_images(trained, loaded.images, test, held_out, args.profile, bundle)

    n = len(loaded.rows)
    kind = f"{channels}x{size}x{size} {'RGB' if channels == 3 else 'grey'}"
    print(f"\nModel: {args.model} trained on {args.dataset} (profile {args.profile}, "
          f"checkpoint {trained.key}); images converted to {kind}.")
    print(f"Scored {n:,} image(s) from {args.path}; skipped {len(loaded.skipped):,} unreadable"
          + (f"; ignored {loaded.ignored:,} non-image file(s)" if loaded.ignored else "") + ".")
    print(f"Reference (--test-images {args.test_images:,}): {test.label}, {test.coverage}; "
          f"H_hat = {h_hat:,.1f} nats from {fit_note}.")
    mean_user, inf_user = scoring.finite_mean(user["bpd"])
    mean_test, inf_test = scoring.finite_mean(ref["bpd"])
    inf_note = (f" ({inf_user} of yours, {inf_test} of the test set infinite, left out)"
                if inf_user or inf_test else "")
    print(f"Mean bits/dim: your images {mean_user:.3f}, test set {mean_test:.3f}{inf_note}.")
    print("\nAUROC of each score, your images as the positive (OOD) class against the test set,"
          "\nwith a 95% bootstrap interval (0.5 = indistinguishable, 1 = all yours score higher,"
          "\nbelow 0.5 = yours look more in-distribution than the test set):")
    computed = [key for key in scores.METHOD_NAMES if key in user]
    for key in computed:
        print(f"  {scores.METHOD_NAMES[key]:<30} "
              f"{_fmt_auroc(metrics.detection_row(ref[key], user[key]))}")
    for line in bundle.left_out:  # "<score>: why, and the command that trains its companion"
        print(f"  Left out, {line}")
    if n < FEW_IMAGES:
        print(f"  Note: AUROC needs at least a few images; with {n} the interval is wide and "
              "the value says little.")

    frame = pd.DataFrame(loaded.rows)
    columns = CSV_COLUMNS + computed
    for column in columns[len(IMAGE_COLUMNS):]:
        frame[column] = user[column]
    write_csv_atomic(frame[columns], out)
    print(f"\nPer-image scores ({n:,} rows): {out}")
    return out


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ``ood-score`` (and of ``python -m ood_lib score``); returns the exit
    status: 0, or 2 with a one-line message on a problem the user can fix."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        run(args)
    except (UsageError, ImageInputError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
