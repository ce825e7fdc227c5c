"""The wall-time budget of each chapter and of the whole build, and the end-of-run table.

At the end of every run the runner prints each chapter's wall time beside its budget
(:data:`CHAPTER_BUDGET_S`, summing to the build's :data:`BUDGET_S`) and flags every chapter,
and the total, over budget.
"""

from __future__ import annotations

from collections.abc import Sequence

# Wall-time budget of a whole build per profile on the project's 2-core machines (seconds):
# `make book` on a fresh clone with the shipped checkpoints, and the smoke book inside CI.
BUDGET_S = {"smoke": 10 * 60, "cpu": 12 * 60}

HTML_ROW = "(HTML build)"  # the row of the jupyter-book build in the timings and budgets

# Wall-time budget of each chapter of a fresh-clone cpu build (seconds; they sum to the cpu
# BUDGET_S, 12 minutes). Measured on the last full cpu build before the table (2 cores, loaded
# by two trainings) -> budget and why:
#   01_data             19 ->  20  loads and summarises the data sets
#   02_glow             12 ->  15  plots shipped training logs, draws samples
#   03_phenomenon      129 ->  80  scores every set under the Glows; a faster Glow (issue 19)
#                                  and a shared score cache bring it down
#   04_decomposition    15 ->  15  reads the score cache
#   05_constant_volume  76 ->  60  scores the constant-volume Glows
#   06_second_order    233 -> 200  Hessians and intervention sweeps (issue 18 caps it at 240)
#   07_explanations    245 ->  75  new (its first run); its issue caps it at 180; 15 s of its
#                                  budget went to the at-a-glance page
#   08_families        678 -> 120  636 s of it scored the PixelCNN and the VAE; the evaluation
#                                  speed-ups (benchmarks/bench_families.py) and a lighter set
#                                  of scored images must bring it down
#   09_remedies        218 -> 100  compressors, DoSE statistics, background models
#   10_scorecard         5 ->  10  reads the records
#   00_at_a_glance       - ->  15  new: reads three records, draws one figure (executed last;
#                                  17 s in the loaded smoke build, mostly the kernel's imports)
#   (HTML build)         8 ->  10  jupyter-book on the executed notebooks
# A chapter over its budget is flagged at the end of every run (print_summary), so that a
# chapter that grows has to take its time from another row of this table, not from the total.
CHAPTER_BUDGET_S: dict[str, dict[str, float]] = {
    "cpu": {
        "01_data": 20, "02_glow": 15, "03_phenomenon": 80, "04_decomposition": 15,
        "05_constant_volume": 60, "06_second_order": 200, "07_explanations": 75,
        "08_families": 120, "09_remedies": 100, "10_scorecard": 10, "00_at_a_glance": 15,
        HTML_ROW: 10,
    },
    # smoke: the whole build's budget only (its chapters' times are dominated by kernel starts
    # and tiny trainings, and CI machines vary more than the cpu profile's target machine)
    "smoke": {},
}


def budget_report(profile: str, times: dict[str, float], skipped: Sequence[str] = (),
                  budgets: dict[str, float] | None = None, total_budget: float | None = None,
                  order: Sequence[str] | None = None,
                  wall: float | None = None) -> tuple[list[str], list[str]]:
    """The end-of-run table: ``(lines, over)``, ``over`` naming every row over its budget
    (``"total"`` for the whole run). ``times``: wall seconds per chapter executed in this run
    (and :data:`HTML_ROW`); ``skipped``: chapters left unchanged (no time spent); ``budgets``
    and ``total_budget`` default to the profile's :data:`CHAPTER_BUDGET_S` and
    :data:`BUDGET_S`; ``order``: the rows' order (chapter names; the HTML build comes last).
    A chapter without a budget in a profile that has per-chapter budgets is listed as
    ``no budget`` (and counted as over: every chapter needs a row). ``wall``: the run's own
    wall time, which is the total held against the budget when chapters executed side by side
    (their times then add up to more)."""
    budgets = CHAPTER_BUDGET_S.get(profile, {}) if budgets is None else budgets
    total_budget = BUDGET_S.get(profile) if total_budget is None else total_budget
    if not times and not skipped:
        return [], []
    names = list(times) + [name for name in skipped if name not in times]
    rank = {name: n for n, name in enumerate(order or ())}
    # in ``order`` (the toc's), executed and skipped chapters alike; the HTML build last
    names.sort(key=lambda name: (name == HTML_ROW, rank.get(name, len(rank))))
    width = max(map(len, [*names, "total"]))
    total = sum(times.values())
    head = f", budget {total_budget / 60:.0f} min" if total_budget else ""
    lines = [f"[book] wall time, profile {profile!r}{head}:"]
    over = []
    for name in names:
        if name not in times:
            lines.append(f"  {name:<{width}}  {'-':>8}    unchanged, skipped")
            continue
        seconds = times[name]
        row = f"  {name:<{width}}  {seconds:8.1f} s  {100 * seconds / total if total else 0:5.1f}%"
        budget = budgets.get(name)
        if budget is not None:
            flag = "" if seconds <= budget else "  OVER BUDGET"
            row += f"  budget {budget:6.0f} s{flag}"
            if flag:
                over.append(name)
        elif budgets:
            row += "  no budget (add it to CHAPTER_BUDGET_S)"
            over.append(name)
        lines.append(row)
    if wall is not None and abs(wall - total) > 1:
        lines.append(f"  {'(sum)':<{width}}  {total:8.1f} s  the rows added up; side by side "
                     "they took less")
        total = wall
    verdict = ""
    if total_budget:
        verdict = " (within budget)" if total <= total_budget else " (OVER BUDGET)"
        if total > total_budget:
            over.append("total")
    lines.append(f"  {'total':<{width}}  {total:8.1f} s{verdict}")
    return lines, over


def print_summary(profile: str, times: dict[str, float], skipped: Sequence[str] = (),
                  order: Sequence[str] | None = None, wall: float | None = None) -> None:
    """Print :func:`budget_report`: the wall times of this run, each beside its budget."""
    lines, _ = budget_report(profile, times, skipped, order=order, wall=wall)
    if lines:
        print("\n" + "\n".join(lines), flush=True)
