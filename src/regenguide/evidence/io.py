"""Reading study-level and time-to-event CSV files with messages that name the row and column.

Row numbers are CSV line numbers (the header is line 1, the first study line 2), so a user can go
straight to the faulty cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from regenguide.evidence.effects import (
    EffectSizeError,
    EffectSizes,
    Measure,
    binary_effects,
    continuous_effects,
    generic_effects,
)

BINARY_COLUMNS = ("treat_events", "treat_total", "ctrl_events", "ctrl_total")
CONTINUOUS_COLUMNS = ("treat_mean", "treat_sd", "treat_n", "ctrl_mean", "ctrl_sd", "ctrl_n")
GENERIC_COLUMNS = ("yi", "vi")


class EvidenceInputError(ValueError):
    """A CSV file that cannot be analysed; the message names the file position at fault."""


def read_csv(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise EvidenceInputError(f"{p}: file not found")
    try:
        frame = pd.read_csv(p, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EvidenceInputError(f"{p}: not a readable CSV file ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise EvidenceInputError(f"{p}: no data rows")
    return frame


def _label(frame: pd.DataFrame, i: int) -> str:
    line = i + 2
    if "study" in frame.columns and pd.notna(frame["study"].iloc[i]):
        return f"row {line} (study {str(frame['study'].iloc[i])!r})"
    return f"row {line}"


def _numeric(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise EvidenceInputError(f"missing column(s): {', '.join(missing)} (found: {', '.join(frame.columns)})")
    out: dict[str, np.ndarray] = {}
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raw = frame[col].iloc[i]
            what = "is empty" if pd.isna(raw) else f"is not a number ({raw!r})"
            raise EvidenceInputError(f"{_label(frame, i)}, column {col}: {what}")
        out[col] = values
    return out


def _check(frame: pd.DataFrame, mask: np.ndarray, column: str, message: str) -> None:
    bad = np.flatnonzero(mask)
    if bad.size:
        raise EvidenceInputError(f"{_label(frame, int(bad[0]))}, column {column}: {message}")


def effects_from_frame(frame: pd.DataFrame, measure: Measure | str) -> EffectSizes:
    """Effect sizes from a study table: `yi,vi` columns if present (taken on the analysis scale, i.e.
    log RR / log OR for ratio measures), else the columns the measure needs."""
    measure = Measure(measure)
    studies = (
        [str(s) for s in frame["study"].fillna("").tolist()]
        if "study" in frame.columns
        else [f"study {i + 1}" for i in range(len(frame))]
    )
    try:
        if all(c in frame.columns for c in GENERIC_COLUMNS):
            cols = _numeric(frame, GENERIC_COLUMNS)
            _check(frame, cols["vi"] <= 0, "vi", "must be > 0")
            return generic_effects(cols["yi"], cols["vi"], studies, measure=measure)
        if measure.is_binary:
            cols = _numeric(frame, BINARY_COLUMNS)
            for c in BINARY_COLUMNS:
                _check(frame, cols[c] < 0, c, "count must not be negative")
                _check(frame, cols[c] != np.round(cols[c]), c, "counts must be whole numbers")
            _check(frame, cols["treat_events"] > cols["treat_total"], "treat_events", "exceeds treat_total")
            _check(frame, cols["ctrl_events"] > cols["ctrl_total"], "ctrl_events", "exceeds ctrl_total")
            _check(frame, cols["treat_total"] == 0, "treat_total", "must be > 0")
            _check(frame, cols["ctrl_total"] == 0, "ctrl_total", "must be > 0")
            return binary_effects(
                cols["treat_events"], cols["treat_total"], cols["ctrl_events"], cols["ctrl_total"], measure, studies
            )
        if measure in (Measure.MD, Measure.SMD):
            cols = _numeric(frame, CONTINUOUS_COLUMNS)
            for c in ("treat_sd", "ctrl_sd"):
                _check(frame, cols[c] <= 0, c, "standard deviation must be > 0")
            for c in ("treat_n", "ctrl_n"):
                _check(frame, cols[c] < 2, c, "group size must be at least 2")
                _check(frame, cols[c] != np.round(cols[c]), c, "group size must be a whole number")
            return continuous_effects(
                cols["treat_mean"],
                cols["treat_sd"],
                cols["treat_n"],
                cols["ctrl_mean"],
                cols["ctrl_sd"],
                cols["ctrl_n"],
                measure,
                studies,
            )
    except EffectSizeError as exc:
        raise EvidenceInputError(str(exc)) from exc
    raise EvidenceInputError(f"measure {measure} needs columns yi,vi")


def survival_from_frame(
    frame: pd.DataFrame, time: str, event: str, group: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from regenguide.evidence.survival import SurvivalInputError, validate_survival_data  # lifelines: deferred

    for col in (time, event, *([group] if group else [])):
        if col not in frame.columns:
            raise EvidenceInputError(f"missing column {col!r} (found: {', '.join(frame.columns)})")
    try:
        return validate_survival_data(frame[time], frame[event], frame[group] if group else None, first_row=2)
    except SurvivalInputError as exc:
        msg = str(exc)
        named: list[tuple[str, str | None]] = [("time", time), ("event", event), ("group", group)]
        for field, column in named:
            if column and f": {field} " in msg:
                msg = msg.replace(f": {field} ", f", column {column}: ", 1)
                break
        raise EvidenceInputError(msg) from exc
