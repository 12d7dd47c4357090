"""Checks on a series' time axis: parsing stamps, inferring the step, finding gaps.

Everything here reports problems as text for ``DataValidationError`` instead of raising at the
first one, so a user sees every fault of a file in one go. Row numbers are 1-based data rows with
the header not counted (see ``readers``).

Integer stamps are epochs. Their unit (s, ms, us, ns) comes from ``data.epoch_unit`` or is
inferred: first from the median step, which must be a round sampling interval (1 s ... 1 week) in
exactly one unit, and only failing that from the magnitude of the largest value. The step rule is
what makes "milliseconds since the trace start" files (0, 60000, 120000, ...) load as one-minute
data: by magnitude alone those small numbers would pass for seconds.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from informerflow.data.readers import MISSING_TOKENS
from informerflow.errors import ConfigError

ROWS_NOTE = "(1-based data rows, header not counted)"
EPOCH_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_INT64_MAX = 2**63 - 1
# Sampling intervals that real recorders use; an epoch unit that turns the median step into one of
# these is taken as the file's unit.
_ROUND_STEPS_S = frozenset(
    [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30]
    + [60 * m for m in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)]
    + [3600 * h for h in (1, 2, 3, 4, 6, 8, 12)]
    + [86400, 7 * 86400]
)
_INT_TEXT = re.compile(r"^[+-]?\d+$")
_ZONED = re.compile(
    r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE
)
_MAX_LISTED = 8


# -- formatting --------------------------------------------------------------------------------


def fmt_ts(ts: pd.Timestamp) -> str:
    return str(pd.Timestamp(ts))


def fmt_rows(rows: list[int] | np.ndarray, limit: int = _MAX_LISTED) -> str:
    """``data rows 3, 7-9 and 2 more`` with consecutive numbers folded into ranges."""
    rows = sorted(int(r) for r in rows)
    spans: list[tuple[int, int]] = []
    for r in rows:
        if spans and r == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], r)
        else:
            spans.append((r, r))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:limit])
    more = f" and {len(spans) - limit} more" if len(spans) > limit else ""
    return f"data row{'s' if len(rows) > 1 else ''} {text}{more}"


def plural(n: int, word: str) -> str:
    """``1 timestamp``, ``2 timestamps``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def in_series(sid: str | None) -> str:
    return f" in series {sid!r}" if sid is not None else ""


# -- options -----------------------------------------------------------------------------------


def normalise_freq(freq: str) -> str:
    """A pandas offset alias in its current spelling (``"T"`` -> ``"min"``), or ConfigError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return to_offset(freq).freqstr
    except (ValueError, TypeError):
        raise ConfigError(
            f"data.freq {freq!r} is not a pandas offset alias; use e.g. 'min', '15min', 'h', "
            "'D', 'B', 'MS' or '30s', or leave it unset to infer the step"
        ) from None


# -- timestamps --------------------------------------------------------------------------------


@dataclass
class ParsedStamps:
    """A time column turned into tz-naive UTC datetimes (NaT where a cell was not usable)."""

    stamps: pd.Series
    tz: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_stamps(
    col: pd.Series, rows: np.ndarray, epoch_unit: str | None, name: str
) -> ParsedStamps:
    """Parse ISO strings, ``YYYY-MM`` periods, integer epochs or stored datetimes.

    Args:
        col: the time column's cells.
        rows: each cell's 1-based data row, for messages.
        epoch_unit: forced unit for integer stamps, or None to infer it.
        name: the column's name in the file.
    """
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        tz = str(col.dtype.tz)
        stamps = col.dt.tz_convert("UTC").dt.tz_localize(None)
        return _finish(ParsedStamps(stamps.astype("datetime64[ns]"), tz), col, rows, name)
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        return _finish(ParsedStamps(col.astype("datetime64[ns]")), col, rows, name)
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        numbers = [None if pd.isna(v) else round(v) for v in col.tolist()]
        return _finish(_from_epochs(numbers, epoch_unit, name), col, rows, name)

    text = col.astype(str).str.strip()
    present = ~text.str.lower().isin(MISSING_TOKENS)
    if present.any() and _INT_TEXT.match(text[present].iloc[0]) and (
        text[present].str.match(_INT_TEXT).all()
    ):
        for digits, fmt, what in ((8, "%Y%m%d", "YYYYMMDD dates"), (4, "%Y", "years")):
            if epoch_unit is None and _looks_like_dates(text[present], digits, fmt):
                stamps = pd.to_datetime(text.where(present), format=fmt, errors="coerce")
                note = f"column {name}: {digits}-digit integers read as {what}"
                return _finish(ParsedStamps(stamps, notes=[note]), col, rows, name)
        # Python ints: float64 would round nanosecond epochs to multiples of 256 ns.
        numbers = [int(v) if ok else None for v, ok in zip(text, present, strict=True)]
        return _finish(_from_epochs(numbers, epoch_unit, name), col, rows, name)
    return _finish(_from_text(text.where(present, ""), rows, name), col, rows, name)


def _looks_like_dates(text: pd.Series, digits: int, fmt: str) -> bool:
    """All cells are ``digits`` long and valid dates in ``fmt`` between 1900 and 2100."""
    if not text.str.len().eq(digits).all():
        return False
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    return bool(parsed.notna().all() and parsed.dt.year.between(1900, 2100).all())


def infer_epoch_unit(values: np.ndarray) -> tuple[str, str]:
    """The unit of integer epochs and why it was chosen (see the module docstring)."""
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)].astype(np.int64)
    finite = np.unique(values)
    steps = _spans(finite)
    largest = max(abs(int(finite[0])), abs(int(finite[-1]))) if finite.size else 0  # exact
    if steps.size:
        median = float(np.median(steps))
        fits = [
            unit for unit, ns in EPOCH_UNITS.items()
            if median.is_integer() and (median * ns) % 10**9 == 0
            and (median * ns) // 10**9 in _ROUND_STEPS_S
            and largest * ns < _INT64_MAX  # the unit must keep every stamp within 1677-2262
        ]
        if len(fits) == 1:
            return fits[0], f"the median step {median:.0f} is a round interval in {fits[0]}"
    unit = "s" if largest < 1e11 else "ms" if largest < 1e14 else "us" if largest < 1e17 else "ns"
    return unit, f"the largest value {largest} is in the range of {unit} epochs"


def _from_epochs(numbers: list[int | None], epoch_unit: str | None, name: str) -> ParsedStamps:
    # Known shortcomings: integer stamps of 1900..2100 in text are years and 8-digit ones in that
    # range are YYYYMMDD, so "seconds since trace start" files whose stamps all fall in those
    # ranges need data.epoch_unit. Fractional epochs in text ("1.6e9") are reported as
    # unparseable. Parquet integer columns are always epochs.
    fits = np.array([v is not None and abs(v) <= _INT64_MAX for v in numbers], dtype=bool)
    values = np.array([v if ok else 0 for v, ok in zip(numbers, fits, strict=True)],
                      dtype=np.int64)
    notes = []
    if epoch_unit is None:
        epoch_unit, why = infer_epoch_unit(values[fits])
        notes.append(
            f"column {name}: integer stamps read as {epoch_unit} since 1970-01-01 because {why}; "
            "set data.epoch_unit to override"
        )
    scale = EPOCH_UNITS[epoch_unit]
    usable = fits & (np.abs(values) <= _INT64_MAX // scale)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[usable] = (values[usable] * scale).astype("datetime64[ns]")
    return ParsedStamps(pd.Series(out), notes=notes)


def _from_text(text: pd.Series, rows: np.ndarray, name: str) -> ParsedStamps:
    # Known shortcoming: only ISO 8601 forms are read. Day-first or month-first dates such as
    # 01/02/2021 are reported as unparseable rather than guessed, because guessing is ambiguous.
    zones = text.str.extract(_ZONED, expand=False)
    aware = zones.notna() & text.ne("")
    naive = zones.isna() & text.ne("")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stamps = pd.to_datetime(text.where(text.ne("")), format="ISO8601", errors="coerce",
                                utc=True)
    result = ParsedStamps(stamps.dt.tz_localize(None).astype("datetime64[ns]"))
    if aware.any() and naive.any():
        result.problems.append(
            f"column {name}: {plural(int(aware.sum()), 'stamp')} carry a UTC offset and "
            f"{int(naive.sum())} do not, e.g. {fmt_rows(rows[naive.to_numpy()])} {ROWS_NOTE}; "
            "give every stamp an offset or none"
        )
    elif aware.any():
        result.tz = _zone_name(zones[aware], name, result.notes)
    return result


def _zone_name(zones: pd.Series, name: str, notes: list[str]) -> str:
    # Known shortcoming: with daylight saving, daily (or coarser) stamps at local midnight are 23
    # or 25 hours apart in UTC, so they fail the grid check; such files load when written
    # without offsets.
    canon = {_canonical_offset(z) for z in zones.unique()}
    if len(canon) == 1:
        return canon.pop()
    notes.append(
        f"column {name}: stamps mix the UTC offsets {', '.join(sorted(canon))} (daylight "
        "saving?); they are converted to UTC and forecasts are returned in UTC"
    )
    return "UTC"


def _canonical_offset(zone: str) -> str:
    if zone.upper() == "Z":
        return "UTC"
    digits = zone[1:].replace(":", "")
    hours, minutes = digits[:2], digits[2:4] or "00"
    if hours == "00" and minutes == "00":
        return "UTC"
    return f"{zone[0]}{hours}:{minutes}"


def _finish(result: ParsedStamps, col: pd.Series, rows: np.ndarray, name: str) -> ParsedStamps:
    """Report cells that gave no timestamp: empty ones and unparseable ones separately."""
    cells = col.astype(str).str.strip()
    missing = col.isna().to_numpy() | cells.str.lower().isin(MISSING_TOKENS).to_numpy()
    failed = result.stamps.isna().to_numpy() & ~missing
    if missing.any():
        result.problems.append(
            f"column {name}: {plural(int(missing.sum()), 'empty timestamp')} at "
            f"{fmt_rows(rows[missing])} {ROWS_NOTE}; fill them or delete those rows"
        )
    if failed.any():
        examples = ", ".join(repr(c) for c in cells[failed].unique()[:3])
        result.problems.append(
            f"column {name}: {plural(int(failed.sum()), 'timestamp')} cannot be parsed "
            f"({examples}) at {fmt_rows(rows[failed])} {ROWS_NOTE}; write them as ISO 8601 "
            "(YYYY-MM-DD HH:MM:SS, optionally with an offset), YYYY-MM, or integer epochs "
            "(data.epoch_unit s/ms/us/ns), within the years 1677-2262"
        )
    return result


# -- frequency ---------------------------------------------------------------------------------


def infer_freq(stamps: pd.DatetimeIndex) -> str:
    """The series' step as a pandas offset alias: "min", "15min", "h", "D", "B", "MS", "30s", ...

    Unlike ``pd.infer_freq`` this tolerates gaps and a few odd stamps: the step is the most
    common one, provided it covers at least half of all steps.

    Raises:
        DataError: fewer than two distinct stamps, or no step that dominates.
    """
    from informerflow.errors import DataError

    freq, why = infer_step([pd.DatetimeIndex(stamps)])
    if freq is None:
        raise DataError(
            f"cannot infer the frequency: {why}; set data.freq (e.g. 'min', '15min', 'h', 'D', "
            "'B')"
        )
    return freq


def infer_step(groups: list[pd.DatetimeIndex]) -> tuple[str | None, str]:
    """Infer one step shared by several series; ``(None, reason)`` when there is none."""
    clean = [pd.DatetimeIndex(g).dropna().unique().sort_values() for g in groups]
    clean = [g for g in clean if len(g) > 1]
    if not clean:
        return None, "fewer than 2 distinct timestamps in every series"
    for check in (_monthly, _business_daily):
        freq = check(clean)
        if freq:
            return freq, ""
    steps = Counter(int(d) for g in clean for d in _spans(g.asi8))
    total = sum(steps.values())
    top = max(steps.values())
    # On a tie (only in very short files) the shorter step: the longer one is then read as a gap,
    # which max_gap_steps bounds and the repairs report.
    step = min(s for s, c in steps.items() if c == top)
    if step > _INT64_MAX:
        return None, "the most common step is longer than pandas can represent (292 years)"
    if top * 2 < total:
        return None, (
            f"no regular step: the most common one, {pd.Timedelta(step)}, covers only {top} of "
            f"{total} steps"
        )
    return to_offset(pd.Timedelta(step)).freqstr, ""


def _monthly(groups: list[pd.DatetimeIndex]) -> str | None:
    every = pd.DatetimeIndex(np.concatenate([g.asi8 for g in groups]))
    if (every != every.normalize()).any():
        return None
    if (every.day == 1).all():
        kind = "MS"
    elif every.is_month_end.all():
        kind = "ME"
    else:
        return None
    months = Counter(int(d) for g in groups for d in np.diff(g.year * 12 + g.month))
    k, top = months.most_common(1)[0]
    if top * 2 < sum(months.values()):
        return None
    if k == 12 and kind == "MS" and (every.month == 1).all():
        return "YS"
    return kind if k == 1 else f"{k}{kind}"


def _business_daily(groups: list[pd.DatetimeIndex]) -> str | None:
    every = pd.DatetimeIndex(np.concatenate([g.asi8 for g in groups]))
    if (every.dayofweek >= 5).any() or len(set(every - every.normalize())) != 1:
        return None
    spans_weekend = False
    bsteps: Counter[int] = Counter()
    for g in groups:
        days = g.normalize().to_numpy().astype("datetime64[D]")
        bsteps.update(int(s) for s in np.busday_count(days[:-1], days[1:]))
        cal = np.diff(days).astype(int)
        spans_weekend |= bool(((g.dayofweek[:-1] == 4) & (cal == 3)).any())
    top = bsteps.get(1, 0)
    return "B" if spans_weekend and top * 2 >= sum(bsteps.values()) else None


# -- grid --------------------------------------------------------------------------------------


@dataclass
class Gap:
    """``count`` missing steps between two present stamps."""

    start: pd.Timestamp  # first missing stamp
    end: pd.Timestamp  # last missing stamp
    count: int
    before: int  # position (in the series) of the stamp before the gap
    after: int  # position of the stamp after it


@dataclass
class GridCheck:
    off_grid: np.ndarray  # positions of stamps that are not on the step's grid
    gaps: list[Gap]


def check_grid(stamps: pd.DatetimeIndex, freq: str) -> GridCheck:
    """Compare sorted, unique stamps with the regular grid of ``freq``.

    The grid's phase is the one most stamps share (so one odd first stamp does not condemn the
    rest); stamps off it are reported, and holes between on-grid stamps become gaps.
    """
    offset = to_offset(freq)
    if len(stamps) == 0:
        return GridCheck(np.array([], dtype=int), [])
    if isinstance(offset, pd.offsets.Tick):
        return _tick_grid(stamps, offset)
    return _calendar_grid(stamps, offset)


def _tick_grid(stamps: pd.DatetimeIndex, offset: pd.offsets.Tick) -> GridCheck:
    step = np.uint64(offset.nanos)
    rel = _offsets_from_first(stamps.asi8)
    phase = rel % step
    modal = Counter(phase.tolist()).most_common(1)[0][0]
    on = np.flatnonzero(phase == modal)
    index = (rel[on] - rel[on[0]]) // step
    return GridCheck(np.flatnonzero(phase != modal), _gaps(stamps, on, index, offset))


def _calendar_grid(stamps: pd.DatetimeIndex, offset: pd.offsets.BaseOffset) -> GridCheck:
    tod = stamps - stamps.normalize()
    modal_tod = Counter(tod.asi8.tolist()).most_common(1)[0][0]
    candidates = np.flatnonzero(
        (tod.asi8 == modal_tod) & np.array([offset.is_on_offset(t) for t in stamps])
    )
    if candidates.size == 0:
        return GridCheck(np.arange(len(stamps)), [])
    grid = pd.date_range(stamps[candidates[0]], stamps[candidates[-1]], freq=offset)
    where = grid.get_indexer(stamps)
    on = np.flatnonzero(where >= 0)
    return GridCheck(np.flatnonzero(where < 0), _gaps(stamps, on, where[on], offset))


def _spans(ns: np.ndarray) -> np.ndarray:
    """Steps between sorted int64 nanosecond stamps, exact even across 292+ years."""
    rel = _offsets_from_first(ns)
    return rel[1:] - rel[:-1]


def _offsets_from_first(ns: np.ndarray) -> np.ndarray:
    # int64 differences overflow for stamps more than 292 years apart; modulo-2**64 arithmetic
    # on sorted stamps gives the exact non-negative distance.
    return ns.astype(np.uint64) - np.uint64(ns[0]) if ns.size else ns.astype(np.uint64)


def _gaps(
    stamps: pd.DatetimeIndex, on: np.ndarray, index: np.ndarray, offset: pd.offsets.BaseOffset
) -> list[Gap]:
    gaps = []
    index = np.asarray(index, dtype=np.uint64)
    for k in np.flatnonzero(index[1:] - index[:-1] > 1):
        before, after = on[k], on[k + 1]
        count = int(index[k + 1] - index[k] - 1)
        gaps.append(Gap(stamps[before] + offset, stamps[after] - offset, count, before, after))
    return gaps
