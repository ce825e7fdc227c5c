"""How chapters show numbers: one table style and one number format for the whole book.

A table longer than :data:`LONG_TABLE_ROWS` rows is shown folded (an HTML ``<details>``
element, one click to open), so that a chapter reads as its figures and prose, with the full
numbers under the figure that summarises them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display

from ood_lib.zoo.registry import TrainedModel

LONG_TABLE_ROWS = 12


def number(v: float, digits: int = 3) -> str:
    """Fixed decimals; scientific notation for the astronomically large (noise bits/dim)."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.number):
        return str(v)
    if not np.isfinite(v):
        return "–" if np.isnan(v) else ("∞" if v > 0 else "−∞")
    return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.2e}"


def show(table: pd.DataFrame, formats: Mapping[str, str | Callable] | None = None,
         digits: int = 3) -> None:
    """Display a table without its index, floats with :func:`number` unless ``formats`` says
    otherwise for a column; folded (:func:`folded`) when it has more than
    :data:`LONG_TABLE_ROWS` rows."""
    default = {c: (lambda v, d=digits: number(v, d)) for c in table.columns
               if pd.api.types.is_float_dtype(table[c])}
    styled = table.style.format({**default, **(formats or {})}, na_rep="–").hide(axis="index")
    display(folded(styled.to_html(), len(table)) if len(table) > LONG_TABLE_ROWS else styled)


def folded(html: str, rows: int) -> HTML:
    """A table's HTML inside a closed ``<details>`` element whose summary counts its rows."""
    return HTML(f'<details class="long-table"><summary>The full table ({rows} rows): click to '
                f"show</summary>\n{html}\n</details>")


def say(text: str) -> None:
    """Display a sentence of prose built from computed numbers."""
    display(Markdown(text))


def stale_models(models: Iterable[TrainedModel]) -> None:
    """A warning box listing the models (and companions) that are stale stand-ins, trained
    before the held-out split existed (:func:`ood_lib.zoo.registry.get`); nothing if none is."""
    lines = sorted({m.stale for m in models if m.stale})
    if lines:
        say(":::{warning}\n**Stale models.** Until they are retrained, these checkpoints stand in "
            "for the models this chapter asks for; every number computed from them is theirs:\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n:::")
