r"""Which term of the change of variables prefers the OOD data? (the paper's Figure 4)

A flow's log-likelihood is a sum, $\log p(x) = \log p(z) + \log|\det \partial z/\partial x|$,
and every term is computed per image by :class:`~ood_lib.models.glow.Glow` in the same forward
pass, split further by level and layer type (``FlowOutput.parts``). For a term $t$ and the
evaluated sets, this module reports its mean per set, in nats per image and in bits/dim,

$$\text{bpd}(t) = -\frac{t}{D \ln 2}, \qquad
  \text{bpd}(x) = \text{bpd}(\log p(z)) + \text{bpd}(\log|\det|) + n ,$$

(the dequantization constant $n$ belongs to neither term), and its OOD $-$ test gap: a term
whose mean is *larger* on the OOD set (a positive gap in nats, a negative one in bits/dim)
favours the OOD data.

Where the line between "density" and "volume" is drawn matters. Each split prior scores the
factored-out half $z_2$ by $\mathcal N(\mu(z_1), \sigma(z_1)^2)$, and
$\log \mathcal N = -\sum \log \sigma + \log \mathcal N(\epsilon; 0, 1)$: the first term is the
log-determinant of the standardisation $z_2 \mapsto \epsilon$ and depends on the input. So
:func:`readings` gives two readings: the paper's ($\log p(z)$ against $\log|\det|$) and one that
moves the priors' scale terms to the volume side.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ood_lib import records
from ood_lib.models.base import bits_per_dim, copy_as
from ood_lib.models.glow import Glow
from ood_lib.scoring import finite_mean

# Per role ("train", "test", "ood"): the per-image arrays of ood_lib.scoring.score.
Scores = Mapping[str, Mapping[str, np.ndarray]]
ROLES = ("train", "test", "ood")


def favouring(gaps: Mapping[str, float]) -> list[str]:
    """The terms, of ``{term: OOD - test gap of mean log-density, nats}``, that favour the OOD
    set: those whose gap is positive (the OOD images get more of that term)."""
    return [term for term, gap in gaps.items() if gap > 0]


def _mean(values: np.ndarray) -> float:
    return finite_mean(values)[0]


def term_table(scores: Scores, n_dims: int, n_bits: int) -> pd.DataFrame:
    """Mean ``log_pz`` and ``log_det`` per set, in nats per image and bits/dim, with the
    OOD - test gap, a row for the dequantization constant and a row for the total."""
    rows = []
    for term, label in (("log_pz", "log p(z)"), ("log_det", "log |det|")):
        nats = {role: _mean(scores[role][term]) for role in ROLES}
        rows.append({"term": label, **{f"{r} (nats)": v for r, v in nats.items()},
                     "OOD − test (nats)": nats["ood"] - nats["test"],
                     **{f"{r} (bpd)": bits_per_dim(v, n_dims, 0) for r, v in nats.items()},
                     "OOD − test (bpd)": bits_per_dim(nats["ood"] - nats["test"], n_dims, 0)})
    rows.append({"term": f"dequantization (+{n_bits})",
                 **{f"{r} (bpd)": float(n_bits) for r in ROLES}, "OOD − test (bpd)": 0.0})
    total = {role: _mean(scores[role]["bpd"]) for role in ROLES}
    rows.append({"term": "bits/dim (sum)", **{f"{r} (bpd)": v for r, v in total.items()},
                 "OOD − test (bpd)": total["ood"] - total["test"]})
    return pd.DataFrame(rows)


def term_gaps(scores: Scores) -> list[records.TermGap]:
    r"""OOD - test difference of the mean of each term of $\log p(x)$ (nats per image):
    ``log p(z)``, ``log |det|`` and their sum ``log p(x)``; a positive gap favours the OOD set."""
    return [records.TermGap(term=label, gap_nats=_mean(scores["ood"][term])
                            - _mean(scores["test"][term]))
            for term, label in (("log_pz", "log p(z)"), ("log_det", "log |det|"),
                                ("log_px", "log p(x)"))]


def part_names(scores: Mapping[str, np.ndarray]) -> list[str]:
    """The fine parts of a Glow's scores, ``log_det.*`` first, in flow order."""
    det = [k for k in scores if k.startswith("log_det.")]
    pz = [k for k in scores if k.startswith("log_pz.")]
    return det + pz


def parts_table(scores: Scores, n_dims: int) -> pd.DataFrame:
    """Every part's mean on the test and OOD sets, the OOD - test gap in nats and bits/dim, and
    whether the part varies across images at all (actnorm and 1x1 parts never do)."""
    rows = []
    for part in part_names(scores["test"]):
        t, o = scores["test"][part], scores["ood"][part]
        rows.append({"part": part, "test (nats)": _mean(t), "OOD (nats)": _mean(o),
                     "OOD − test (nats)": _mean(o) - _mean(t),
                     "OOD − test (bpd)": bits_per_dim(_mean(o) - _mean(t), n_dims, 0),
                     "varies with input": bool(np.ptp(np.r_[t, o]) > 0)})
    return pd.DataFrame(rows)


def volume_terms(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image terms of the two readings (see the module docstring)."""
    scale = sum(v for k, v in scores.items() if k.startswith("log_pz.") and k.endswith(".scale"))
    eps = sum(v for k, v in scores.items() if k.startswith("log_pz.") and k.endswith(".eps"))
    return {
        "paper: log p(z)": scores["log_pz"], "paper: log |det|": scores["log_det"],
        "scale moved: log N(eps; 0, I)": eps, "scale moved: log |det| + prior scales":
        scores["log_det"] + scale,
    }


def readings(scores: Scores, n_dims: int) -> pd.DataFrame:
    """Both readings: for each, the OOD - test gap of its density and its volume term (bits/dim
    and nats) and which of the two favours the OOD set (a positive gap in nats)."""
    t, o = volume_terms(scores["test"]), volume_terms(scores["ood"])
    rows = []
    for reading in ("paper", "scale moved"):
        names = [k for k in t if k.startswith(reading + ":")]
        gaps = {k.split(": ", 1)[1]: _mean(o[k]) - _mean(t[k]) for k in names}
        (d_name, d_gap), (v_name, v_gap) = gaps.items()
        favours = favouring(gaps)
        rows.append({"reading": reading, "density term": d_name,
                     "density gap (nats)": d_gap, "density gap (bpd)": bits_per_dim(d_gap, n_dims, 0),
                     "volume term": v_name, "volume gap (nats)": v_gap,
                     "volume gap (bpd)": bits_per_dim(v_gap, n_dims, 0),
                     "favours OOD": " and ".join(favours) or "neither"})
    return pd.DataFrame(rows)


@torch.no_grad()
def precision_check(model: Glow, images: torch.Tensor, batch_size: int = 250) -> pd.DataFrame:
    """Score uint8 ``images`` with the float32 model and with a float64 copy of it; per part, the
    median in each precision and how many values are not finite. If float64 agrees with
    float32, extreme scores are the trained model's, not round-off or overflow."""
    model64 = copy_as(model)
    out: dict[str, dict[str, list[np.ndarray]]] = {"float32": {}, "float64": {}}
    for start in range(0, len(images), batch_size):
        x = model.inputs(images[start : start + batch_size])
        for precision, net, xb in (("float32", model, x), ("float64", model64, x.double())):
            for name, v in net.log_prob_parts(xb.to(next(net.parameters()).device)).items():
                out[precision].setdefault(name, []).append(v.double().cpu().numpy())
    rows = []
    for name in ["log_px", "log_pz", "log_det", *part_names(out["float32"])]:
        v32, v64 = (np.concatenate(out[p][name]) for p in ("float32", "float64"))
        rows.append({"part": name, "median float32 (nats)": float(np.median(v32)),
                     "median float64 (nats)": float(np.median(v64)),
                     "max |float32 − float64| / |float64|": float(np.nanmax(
                         np.abs(v32 - v64) / np.maximum(np.abs(v64), 1e-300))),
                     "non-finite float32": int((~np.isfinite(v32)).sum()),
                     "non-finite float64": int((~np.isfinite(v64)).sum())})
    return pd.DataFrame(rows)


def extreme_summary(check: pd.DataFrame) -> str:
    """One sentence on a :func:`precision_check`: the part with the most negative median and
    whether float64 agrees with float32."""
    parts = check[~check["part"].isin(["log_px", "log_pz", "log_det"])]
    worst = parts.loc[parts["median float64 (nats)"].idxmin()]
    agree = check["max |float32 − float64| / |float64|"].max()
    non_finite = int(check["non-finite float32"].sum() + check["non-finite float64"].sum())
    head = (f"The most negative part is `{worst['part']}`, with a median of "
            f"{worst['median float64 (nats)']:.3g} nats per image in float64. ")
    if agree < 1e-3 and not non_finite:
        return head + (f"float32 and float64 agree to a relative {agree:.1e} on every part and "
                       "no value is infinite in either precision: the extreme scores are the "
                       "trained model's, not an artefact of float32.")
    return head + (f"float32 and float64 differ by up to a relative {agree:.1e}, with "
                   f"{non_finite} non-finite values: float32 arithmetic changes these scores.")
