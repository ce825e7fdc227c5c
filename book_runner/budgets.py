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

# Wall-time budget of each chapter of a fresh-clone cpu build (seconds), chapters executing two
# side by side on one thread each (`--jobs 2`, the cpu default on 2 cores), so the rows add up
# to more than the build: scheduled as the runner schedules them (the longest first, the
# scorecard and the at-a-glance page after the rest, then the HTML) they fill the 12 minutes
# of BUDGET_S (tests/test_book.py checks it). Measured on fresh clones on a 2-core AMD EPYC
# (full-width AVX-512), two at a time: c5d5920 10:56 in all, 45461ee 10:29 (chapters 08 and 09
# share their common scores since, scoring.score_all); the machines of this kind differ up
# to 2x, and an earlier one took 21:42 for the c5d5920 build. Seconds c5d5920 / 45461ee -> budget:
#   09_remedies        641 / 617 -> 660  every remedy on every family and pair; the longest, first
#   08_families        316 / 220 -> 300  the PixelCNNs and VAEs (its share of the scores 09 also
#                                        needs depends on which of the two reaches them first)
#   06_second_order    161 / 158 -> 170  Hessians and intervention sweeps
#   03_phenomenon      110 /  61 -> 120  scores every set under the Glows and their seeds
#   01_data             13 /  12 ->  15  loads and summarises the data sets
#   07_explanations     13 /  14 ->  15
#   04_decomposition    12 /  13 ->  15  reads the score cache
#   05_constant_volume  10 /   8 ->  15  scores the constant-volume Glows
#   02_glow              9 /  11 ->  15  plots shipped training logs, draws samples
#   00_at_a_glance       5 /   5 ->  10  reads three records, draws one figure (after the scorecard)
#   10_scorecard         4 /   4 ->  10  reads the records (after every chapter)
#   (HTML build)         4 /   4 ->  10  jupyter-book on the executed notebooks
# A chapter over its budget is flagged at the end of every run (print_summary), so that a
# chapter that grows has to take its time from another row of this table, not from the total.
CHAPTER_BUDGET_S: dict[str, dict[str, float]] = {
    "cpu": {
        "01_data": 15, "02_glow": 15, "03_phenomenon": 120, "04_decomposition": 15,
        "05_constant_volume": 15, "06_second_order": 170, "07_explanations": 15,
        "08_families": 300, "09_remedies": 660, "10_scorecard": 10, "00_at_a_glance": 10,
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
