"""Results at a glance: the book's answers on one page, read from what the chapters saved.

The page ``chapters/00_at_a_glance.md`` computes nothing new. It reads three typed records
(:mod:`ood_lib.records`) and turns their fields into

- the scorecard's verdicts, one row per claim with its one-line reason and a link to the
  chapter whose record the claim reads (:func:`verdict_rows`);
- the remedies leaderboard, re-plotted from the saved detections (:func:`leaderboard_table`,
  drawn by :func:`ood_lib.report.plots.leaderboard`);
- the fidelity table, the paper's published numbers beside ours with the compute of the
  model behind each (:func:`fidelity_table`).

The runner (:mod:`book_runner`) executes the page after every other chapter. A record that
is missing raises :class:`~ood_lib.results.MissingResultError` naming it and the chapter that
saves it, never a blank table.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ood_lib import paper, records, results
from ood_lib.analysis.remedies import pair_label
from ood_lib.catalogue import FAMILY_NAMES
from ood_lib.report import scorecard
from ood_lib.report.display import number

NEEDS: tuple[type[records.Record], ...] = (records.Scorecard, records.Remedies,
                                           records.GlowTraining)

# Batched typicality tests score batches, not images: the leaderboard ranks per-image scores
# (as chapter 09's figure does), so these rows of the saved detections are left out of it.
BATCHED_PREFIX = "typicality (batches"


class MissingGlanceResult(results.MissingResultError):
    """The at-a-glance page needs a result that no chapter of this profile saved."""


@dataclass(frozen=True)
class Saved:
    """The three records the page reads."""

    scorecard: records.Scorecard
    remedies: records.Remedies
    training: records.GlowTraining


def load(profile: str) -> Saved:
    """Every record in :data:`NEEDS`; a missing one fails naming it and its chapter."""
    loaded: dict[type[records.Record], records.Record] = {}
    for cls in NEEDS:
        try:
            loaded[cls] = results.load_record(profile, cls)
        except results.MissingResultError as err:
            raise MissingGlanceResult(
                f"the at-a-glance page needs result {cls.NAME!r}, saved by chapter "
                f"{cls.CHAPTER}: {err}") from err
    card, rem, training = (loaded[cls] for cls in NEEDS)
    assert isinstance(card, records.Scorecard) and isinstance(rem, records.Remedies)
    assert isinstance(training, records.GlowTraining)
    return Saved(card, rem, training)


def chapter_of(claim: int) -> str:
    """The chapter (docname, e.g. ``03_phenomenon``) whose record a scorecard claim reads."""
    found = next((c for c in scorecard.CLAIMS if c.number == claim), None)
    if found is None:
        raise KeyError(f"the scorecard has no claim {claim}")
    return found.needs[0].CHAPTER


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def verdict_rows(card: records.Scorecard) -> list[dict[str, str]]:
    """One row per verdict: the claim, the verdict, its one-line reason and the chapter
    behind it (a MyST ``{doc}`` link)."""
    return [{"claim": f"{v.claim}. {_cell(v.text)}", "verdict": f"**{v.verdict}**",
             "why": _cell(v.reason), "chapter": f"{{doc}}`{chapter_of(v.claim)}`"}
            for v in card.verdicts]


def markdown_table(rows: list[dict[str, str]], caption: str, name: str,
                   layout: str = "cards") -> str:
    """``rows`` as a numbered MyST table (``{table}`` directive) named ``name``, with the CSS
    classes of ``_static/book.css``: ``layout="cards"`` shows one card per row on a phone,
    ``"wide"`` keeps its columns readable and scrolls in its box."""
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    if layout not in ("cards", "wide"):
        raise ValueError(f"layout must be 'cards' or 'wide', got {layout!r}")
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[h] for h in head) + " |" for row in rows]
    return (f":::{{table}} {caption}\n:name: {name}\n:class: glance glance-{layout}\n\n"
            + "\n".join(lines) + "\n:::")


def text_rows(table: pd.DataFrame, digits: int = 3) -> list[dict[str, str]]:
    """A display table as :func:`markdown_table` rows: numbers in the book's format
    (:func:`ood_lib.report.display.number`), every cell made safe for markdown."""
    return [{str(k): _cell(number(v, digits) if isinstance(v, float) else str(v))
             for k, v in row.items()} for row in table.to_dict(orient="records")]


def verdict_counts(card: records.Scorecard) -> dict[str, int]:
    """How many claims got each verdict, in the order of first appearance."""
    counts: dict[str, int] = {}
    for v in card.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    return counts


def leaderboard_table(rem: records.Remedies) -> pd.DataFrame:
    """The saved per-image detections as :func:`ood_lib.report.plots.leaderboard` draws them:
    columns ``pair`` ("training set → OOD set"), ``method``, ``model`` (family name),
    ``auroc``, ``auroc_lo``, ``auroc_hi``; batched typicality rows left out."""
    rows = [d for d in rem.detections if not d.method.startswith(BATCHED_PREFIX)]
    if not rows:
        raise ValueError("the saved remedies hold no per-image detection")
    return pd.DataFrame([{"pair": pair_label(d.trained_on, d.ood), "method": d.method,
                          "model": FAMILY_NAMES[d.model], "auroc": d.auroc,
                          "auroc_lo": d.auroc_lo, "auroc_hi": d.auroc_hi}
                         for d in rows])


def anchors_table(rem: records.Remedies) -> pd.DataFrame:
    """The published AUROCs (:data:`ood_lib.paper.ANCHORS`) on the pairs of the saved
    detections (columns ``pair``, ``method``, ``auroc``); anchors on a pair not scored here
    are left out."""
    ood = {d.trained_on: d.ood for d in rem.detections}
    return pd.DataFrame([{"pair": pair_label(a.trained_on, ood[a.trained_on]),
                          "method": a.method, "auroc": a.auroc}
                         for a in paper.ANCHORS if a.trained_on in ood],
                        columns=["pair", "method", "auroc"])


def best_scores(rem: records.Remedies) -> pd.DataFrame:
    """Per pair, the per-image score with the highest AUROC (over every family), and raw
    likelihood's AUROC under the same family: the leaderboard in one row per pair."""
    table = leaderboard_table(rem)
    rows = []
    for pair, part in table.groupby("pair", sort=False):
        best = part.loc[part["auroc"].idxmax()]
        nll = part[(part["method"] == "NLL") & (part["model"] == best["model"])]["auroc"]
        rows.append({"pair": pair, "best score": best["method"], "family": best["model"],
                     "auroc": best["auroc"], "nll_auroc": nll.iloc[0] if len(nll) else float("nan")})
    return pd.DataFrame(rows)


def duration(seconds: float | None) -> str:
    """CPU time as a reader compares it: seconds, minutes or hours."""
    if seconds is None:
        return "not logged"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def fidelity_table(saved: Saved) -> pd.DataFrame:
    """The scorecard's fidelity rows, the paper's number labelled as the paper's, with the
    compute of the model behind ours (parameters, steps × batch, training images, CPU time);
    a model missing from the saved training record is an error naming it."""
    compute = {c.key: c for c in saved.training.models}
    rows = []
    for r in saved.scorecard.fidelity:
        row = {"number": r.number, paper.LABEL: r.paper, "ours": r.ours_now,
               "images (ours)": r.images}
        if r.model is None:
            row |= {"parameters": "data only", "steps × batch": "–", "training images": "–",
                    "CPU time": "–"}
        else:
            if r.model not in compute:
                raise MissingGlanceResult(
                    f"result {records.GlowTraining.NAME!r} (chapter "
                    f"{records.GlowTraining.CHAPTER}) has no model {r.model!r}, which the "
                    f"scorecard's fidelity row {r.number!r} names; rerun that chapter")
            c = compute[r.model]
            row |= {"parameters": f"{c.parameters:,}", "steps × batch": f"{c.steps:,} × "
                    f"{c.batch_size}", "training images": f"{c.train_images:,}",
                    "CPU time": duration(c.cpu_s)}
        rows.append(row)
    return pd.DataFrame(rows)
