r"""DoSE, the density of states estimator of Morningstar et al. (AISTATS 2021).

A likelihood model is trusted for its *statistics*, not for its likelihood: each input $x$ gets
a vector of summary statistics $T(x) = (T_1(x), \dots, T_k(x))$ of the model's computation,
their distribution is estimated on held-out in-distribution data (never on training images:
the model's statistics are biased there), and an input is OOD when its statistics are
atypical. Morningstar et al. define two scores, both oriented here so that larger = more OOD:

- **DoSE-KDE** (their Eq. for the product of marginals): one Gaussian KDE $\hat q_j$ per
  statistic, treated as independent,
  $$s(x) = -\sum_{j=1}^{k} \log \hat q_j\big(T_j(x)\big) ;$$
  :func:`ood_lib.scores.dos_score` with ``joint=False`` computes it on
  standardised statistics, which shifts each $\log \hat q_j$ by the constant $\log \sigma_j$
  (Scott's bandwidth scales with the data) and so leaves the ranking unchanged;
- **DoSE-SVM**: a one-class SVM (RBF kernel) fitted to the standardised held-out statistics,
  $s(x) = -f(x)$ with $f$ its decision function. Its two hyperparameters are fixed before any
  result is looked at: $\nu = 0.1$ and $\gamma$ = scikit-learn's ``"scale"``.

**The statistics per family** (:func:`statistics`):

- Glow (as Morningstar et al.): per level $\ell$, $\log p(z_\ell)$ of that level's prior and
  $\log|\det|$ of that level's steps (the coupling layers are the only input-dependent part),
  and the latent norm $\lVert z \rVert_2$ over all levels (scored with the likelihood,
  :meth:`ood_lib.models.glow.Glow.score_parts`);
- VAE (as Morningstar et al.): the rate $\mathrm{KL}(q(z|x) \,\|\, p(z))$ and the distortion
  $-\mathbb E_q \log p(x|z)$ (both Monte-Carlo estimates over the model's $k$ samples), the
  ELBO, and the entropy of the posterior $q(z|x)$ (:func:`posterior_entropy`);
- PixelCNN (*our extension*: Morningstar et al. did not run an autoregressive model): $\log p$,
  the log-probability of each colour channel and, for the 256-way softmax output, the mean
  predictive entropy over subpixels (scored with the likelihood,
  :meth:`ood_lib.models.pixelcnn.PixelCNN.score_parts`). The logistic-mixture output (the
  CIFAR-10 model) leaves the entropy out: it would cost about 2.4 scoring passes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.svm import OneClassSVM

from ood_lib import scoring
from ood_lib.data.image_sets import EvalSet
from ood_lib.scores import dos_score
from ood_lib.zoo.registry import TrainedModel

# Fixed before any result was looked at (Morningstar et al. tune neither per dataset).
SVM_NU = 0.1
SVM_GAMMA = "scale"
# Held-out images the estimators are fitted on (the first of the held-out split): the KDE costs
# (fit rows) x (scored rows) kernel evaluations.
FIT_IMAGES = 2_000


def _level_sums(scores: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Sum of the fine parts ``<prefix>.<level>.<...>`` per level (Glow's scores)."""
    levels: dict[str, np.ndarray] = {}
    for name, values in scores.items():
        if name.startswith(prefix + "."):
            level = name.split(".")[1]
            levels[f"{prefix}.{level}"] = levels.get(f"{prefix}.{level}", 0.0) + values
    return levels


def statistics(model: str, scores: dict[str, np.ndarray],
               extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The DoSE statistics (name -> ``[N]``) of one set under a model of family ``model``,
    from its cached scores and the :func:`extra_statistics` of the same images."""
    if model in ("glow", "glow_cv"):
        return {**_level_sums(scores, "log_pz"), **_level_sums(scores, "log_det"),
                "latent norm": scores["latent_norm"]}
    if model == "vae":
        return {"rate": -scores["neg_kl"], "distortion": -scores["recon"],
                "ELBO": scores["recon"] + scores["neg_kl"],
                "posterior entropy": extra["posterior_entropy"]}
    if model == "pixelcnn":
        entropy = ({"mean predictive entropy": scores["predictive_entropy"]}
                   if "predictive_entropy" in scores else {})
        return {"log p": scores["log_px"],
                **{f"log p, channel {k[-1]}": v for k, v in scores.items()
                   if k.startswith("log_px_c")}, **entropy}
    raise ValueError(f"no DoSE statistics for model family {model!r}")


@torch.no_grad()
def posterior_entropy(model: torch.nn.Module, images: torch.Tensor,
                      batch_size: int = 256) -> np.ndarray:
    r"""Entropy of the VAE's diagonal-Gaussian posterior $q(z|x)$, in nats:
    $H = \sum_i \log \sigma_i + \tfrac d2 (1 + \log 2\pi)$. ``[N]``, float64."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        _, log_sigma = model.encode(model.inputs(images[start:start + batch_size]))
        d = log_sigma.shape[1]
        out.append((log_sigma.double().sum(1) + 0.5 * d * (1 + math.log(2 * math.pi))).numpy())
    return np.concatenate(out)


def images_statistics(trained: TrainedModel, images: torch.Tensor) -> dict[str, np.ndarray]:
    """The statistics the scores lack, of uint8 ``images`` (VAE: the posterior's entropy, an
    encoder pass; Glow's and PixelCNN's are all in the scores)."""
    if trained.spec.model != "vae":
        return {}
    return {"posterior_entropy": posterior_entropy(trained.model, images)}


def extra_statistics(trained: TrainedModel, eval_set: EvalSet, profile: str) -> dict[str, np.ndarray]:
    """:func:`images_statistics` of a book set, cached by content like the scores."""
    if trained.spec.model != "vae":
        return {}
    return scoring.cached(
        profile, f"dose-{trained.key}-{eval_set.name}-{scoring.images_sha256(eval_set.images)[:12]}",
        scoring.cache_key(trained, eval_set.images, statistic="posterior_entropy"),
        lambda: images_statistics(trained, eval_set.images))


def _matrix(stats: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(v, float) for v in stats.values()], axis=1)


def dose_kde(fit: dict[str, np.ndarray], x: dict[str, np.ndarray]) -> np.ndarray:
    r"""DoSE-KDE: $-\sum_j \log \hat q_j(T_j(x))$, one KDE per statistic fitted on ``fit``
    (held-out statistics, name -> ``[N]``); ``x`` the statistics of the scored images."""
    if list(fit) != list(x):
        raise ValueError(f"fit and scored statistics differ: {list(fit)} vs {list(x)}")
    return dos_score(_matrix(fit), _matrix(x), joint=False)


def dose_svm(fit: dict[str, np.ndarray], x: dict[str, np.ndarray]) -> np.ndarray:
    r"""DoSE-SVM: $-f(x)$, $f$ the decision function of a one-class SVM (RBF kernel,
    $\nu$ = :data:`SVM_NU`, $\gamma$ = :data:`SVM_GAMMA`) fitted to the standardised held-out
    statistics ``fit``. Statistics constant on ``fit`` carry no information and are dropped;
    a non-finite scored statistic scores $+\infty$."""
    if list(fit) != list(x):
        raise ValueError(f"fit and scored statistics differ: {list(fit)} vs {list(x)}")
    f, z = _matrix(fit), _matrix(x)
    if not np.isfinite(f).all():
        raise ValueError("fit statistics must be finite")
    mu, sigma = f.mean(0), f.std(0)
    keep = sigma > 1e-6 * np.maximum(np.abs(mu), 1.0)
    svm = OneClassSVM(kernel="rbf", nu=SVM_NU, gamma=SVM_GAMMA)
    svm.fit((f[:, keep] - mu[keep]) / sigma[keep])
    finite = np.isfinite(z).all(1)
    score = np.full(len(z), np.inf)
    if finite.any():
        # s(x) = -f(x): larger = further outside the estimated support
        score[finite] = -svm.decision_function((z[finite][:, keep] - mu[keep]) / sigma[keep])
    return score


def pair_scores(pair: scoring.ScoredPair, profile: str) -> dict[str, dict[str, np.ndarray]]:
    """DoSE-KDE and DoSE-SVM of ``pair``'s test and OOD images (role -> key -> ``[N]``, keys
    as :func:`scores_of`),
    fitted on the first :data:`FIT_IMAGES` of its held-out ``"val"`` role
    (:func:`ood_lib.scoring.with_held_out`); empty when the pair has none (a stale model)."""
    if "val" not in pair.sets:
        return {}
    model = pair.trained.spec.model
    fit = fit_statistics(pair.trained, pair.sets["val"], pair.scores["val"], profile)
    stats = {role: statistics(model, pair.scores[role],
                              extra_statistics(pair.trained, pair.sets[role], profile))
             for role in ("test", "ood")}
    return {role: scores_of(fit, stats[role]) for role in ("test", "ood")}


def fit_statistics(trained: TrainedModel, held_out: EvalSet, held_out_scores: dict[str, np.ndarray],
                   profile: str) -> dict[str, np.ndarray]:
    """The statistics the estimators are fitted on: those of the first :data:`FIT_IMAGES`
    held-out images (``held_out_scores``: their cached scores)."""
    stats = statistics(trained.spec.model, held_out_scores,
                       extra_statistics(trained, held_out, profile))
    return {k: v[:FIT_IMAGES] for k, v in stats.items()}


def scores_of(fit: dict[str, np.ndarray], x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DoSE-KDE and DoSE-SVM of statistics ``x``, keyed as :data:`ood_lib.scores.METHOD_NAMES`
    (``dose_kde``, ``dose_svm``), the estimators fitted on ``fit``."""
    return {"dose_kde": dose_kde(fit, x), "dose_svm": dose_svm(fit, x)}
