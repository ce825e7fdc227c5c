"""How chapters show numbers: one table style and one number format for the whole book."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from ood_lib.registry import TrainedModel


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
    otherwise for a column."""
    default = {c: (lambda v, d=digits: number(v, d)) for c in table.columns
               if pd.api.types.is_float_dtype(table[c])}
    display(table.style.format({**default, **(formats or {})}, na_rep="–").hide(axis="index"))


def say(text: str) -> None:
    """Display a sentence of prose built from computed numbers."""
    display(Markdown(text))


def stale_models(models: Iterable[TrainedModel]) -> None:
    """A warning box listing the models (and companions) that are stale stand-ins, trained
    before the held-out split existed (:func:`ood_lib.registry.get`); nothing if none is."""
    lines = sorted({m.stale for m in models if m.stale})
    if lines:
        say(":::{warning}\n**Stale models.** Until they are retrained, these checkpoints stand in "
            "for the models this chapter asks for; every number computed from them is theirs:\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n:::")
