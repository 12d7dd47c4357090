"""Calendar features of each time stamp, the ``x_mark`` inputs of the Informer embeddings.

Two encodings, picked by ``ModelConfig.embed``:

* ``"timeF"``: continuous features, each scaled to [-0.5, 0.5], fed to a linear layer. Which
  features appear depends on the sampling frequency: a feature finer than the sampling step is
  constant and carries nothing, a coarser one tells the model where in the calendar it is.
* ``"fixed"`` / ``"learned"``: integer calendar indices stored as float columns, looked up in
  embedding tables. The columns are a prefix of ``CALENDAR_COLUMNS`` (coarse to fine), as many as
  the frequency resolves; ``CALENDAR_TABLE_SIZES`` gives each table's size.

Frequencies are pandas aliases, multiples included (``15min``, ``30s``, ``2h``, ``B``, ``W-MON``).
Legacy upper-case aliases (``H``, ``T``, ``S``, ``M``, ``Q``, ``A``) are translated to the spellings
pandas 2.2+ wants, since pandas 3 no longer parses them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

from informerflow.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDS = ("timeF", "fixed", "learned")

# Resolution of a frequency, finest first; each maps to the features it can resolve.
RESOLUTIONS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
SUPPORTED_BASES = (
    "s (and ms, us, ns), min, h (and bh), D, B (and C), W, SME/SMS, ME/MS, QE/QS, YE/YS"
)

# Integer calendar columns for the "fixed"/"learned" embeddings, coarse to fine.
CALENDAR_COLUMNS = ("month", "day", "weekday", "hour", "minute_bucket")
# Table sizes: month 1..12, day 1..31, weekday 0..6, hour 0..23, minute // 15 in 0..3.
CALENDAR_TABLE_SIZES = (13, 32, 7, 24, 4)
MINUTE_BUCKET = 15

_LEGACY_ALIASES = {
    "H": "h", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns",
    "M": "ME", "BM": "BME", "SM": "SME", "Q": "QE", "BQ": "BQE",
    "A": "YE", "Y": "YE", "BA": "BYE", "BY": "BYE",
}
_ALIAS_RE = re.compile(r"^(\d*)([A-Za-z]+)(-\w+)?$")


def _scaled(values: pd.Index | np.ndarray, top: int) -> np.ndarray:
    """Map integers in ``0..top`` linearly onto [-0.5, 0.5]."""
    return np.asarray(values, dtype=np.float64) / top - 0.5


_TIMEF: dict[str, Callable[[pd.DatetimeIndex], np.ndarray]] = {
    "second_of_minute": lambda t: _scaled(t.second, 59),
    "minute_of_hour": lambda t: _scaled(t.minute, 59),
    "hour_of_day": lambda t: _scaled(t.hour, 23),
    "day_of_week": lambda t: _scaled(t.dayofweek, 6),
    "day_of_month": lambda t: _scaled(t.day - 1, 30),
    "day_of_year": lambda t: _scaled(t.dayofyear - 1, 365),
    "week_of_year": lambda t: _scaled(t.isocalendar().week.to_numpy() - 1, 52),
    "month_of_year": lambda t: _scaled(t.month - 1, 11),
}

_TIMEF_BY_RESOLUTION: dict[str, tuple[str, ...]] = {
    "second": ("second_of_minute", "minute_of_hour", "hour_of_day", "day_of_week",
               "day_of_month", "day_of_year"),
    "minute": ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "hour": ("hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "day": ("day_of_week", "day_of_month", "day_of_year"),
    "week": ("day_of_month", "week_of_year"),
    "month": ("month_of_year",),
    # Quarterly and yearly stamps differ only in month (anchors vary), so one feature serves.
    "quarter": ("month_of_year",),
    "year": ("month_of_year",),
}

_CALENDAR_COUNT_BY_RESOLUTION = {
    "second": 5, "minute": 5, "hour": 4, "day": 3, "week": 2, "month": 1, "quarter": 1, "year": 1,
}

# Checked in order: BusinessHour before anything day-like, CustomBusinessDay is a BusinessDay.
_OFFSET_RESOLUTION: tuple[tuple[type, str], ...] = (
    (offsets.Nano, "second"), (offsets.Micro, "second"), (offsets.Milli, "second"),
    (offsets.Second, "second"), (offsets.Minute, "minute"), (offsets.Hour, "hour"),
    (offsets.BusinessHour, "hour"), (offsets.Day, "day"), (offsets.BusinessDay, "day"),
    (offsets.Week, "week"), (offsets.SemiMonthEnd, "week"), (offsets.SemiMonthBegin, "week"),
    (offsets.MonthEnd, "month"), (offsets.MonthBegin, "month"),
    (offsets.BusinessMonthEnd, "month"), (offsets.BusinessMonthBegin, "month"),
    (offsets.QuarterEnd, "quarter"), (offsets.QuarterBegin, "quarter"),
    (offsets.BQuarterEnd, "quarter"), (offsets.BQuarterBegin, "quarter"),
    (offsets.YearEnd, "year"), (offsets.YearBegin, "year"),
    (offsets.BYearEnd, "year"), (offsets.BYearBegin, "year"),
)


def _modern_alias(freq: str) -> str:
    """Translate a legacy alias (``2H``, ``T``, ``M``) to its pandas 2.2+ spelling."""
    match = _ALIAS_RE.match(freq.strip())
    if not match:
        return freq.strip()
    mult, base, anchor = match.groups()
    return f"{mult}{_LEGACY_ALIASES.get(base, base)}{anchor or ''}"


def freq_resolution(freq: str) -> str:
    """The calendar resolution of a pandas frequency alias, one of ``RESOLUTIONS``.

    Raises:
        ConfigError: when ``freq`` is not a pandas alias or is one with no calendar resolution.
    """
    if not isinstance(freq, str) or not freq.strip():
        raise ConfigError(
            f"model.freq {freq!r} is not a frequency; use a pandas alias with base "
            f"{SUPPORTED_BASES}"
        )
    try:
        offset = to_offset(_modern_alias(freq))
    except ValueError as err:
        raise ConfigError(
            f"model.freq {freq!r} is not a pandas frequency alias; supported bases: "
            f"{SUPPORTED_BASES} (with an optional multiple such as 15min)"
        ) from err
    for cls, resolution in _OFFSET_RESOLUTION:
        if isinstance(offset, cls):
            return resolution
    raise ConfigError(
        f"model.freq {freq!r} ({type(offset).__name__}) has no calendar features; supported "
        f"bases: {SUPPORTED_BASES}"
    )


def _check_embed(embed: str) -> None:
    if embed not in EMBEDS:
        raise ConfigError(f"model.embed must be one of {', '.join(EMBEDS)}; got {embed!r}")


def feature_names(freq: str, embed: str) -> tuple[str, ...]:
    """Names of the columns ``time_features`` returns, in order."""
    _check_embed(embed)
    resolution = freq_resolution(freq)
    if embed == "timeF":
        return _TIMEF_BY_RESOLUTION[resolution]
    return CALENDAR_COLUMNS[: _CALENDAR_COUNT_BY_RESOLUTION[resolution]]


def n_time_features(freq: str, embed: str) -> int:
    """Number of columns ``time_features(stamps, freq, embed)`` returns (F)."""
    return len(feature_names(freq, embed))


def _calendar_column(stamps: pd.DatetimeIndex, name: str) -> np.ndarray:
    values = {
        "month": lambda: stamps.month,
        "day": lambda: stamps.day,
        "weekday": lambda: stamps.dayofweek,
        "hour": lambda: stamps.hour,
        "minute_bucket": lambda: stamps.minute // MINUTE_BUCKET,
    }[name]()
    return np.asarray(values, dtype=np.float64)


def time_features(stamps: pd.DatetimeIndex, freq: str, embed: str) -> np.ndarray:
    """Calendar features of ``stamps``: float32 array (L, F), F = ``n_time_features(freq, embed)``.

    Args:
        stamps: the time stamps (anything ``pd.DatetimeIndex`` accepts); time zones are kept, so
            features describe local wall-clock time.
        freq: pandas frequency alias of the series, e.g. ``15min``, ``h``, ``B``.
        embed: ``"timeF"`` for scaled continuous features, ``"fixed"``/``"learned"`` for integer
            calendar indices.

    Raises:
        ConfigError: unknown ``freq`` or ``embed``.
    """
    names = feature_names(freq, embed)
    stamps = pd.DatetimeIndex(stamps)
    if not len(stamps):
        return np.zeros((0, len(names)), dtype=np.float32)
    if embed == "timeF":
        columns = [_TIMEF[name](stamps) for name in names]
    else:
        columns = [_calendar_column(stamps, name) for name in names]
    return np.stack(columns, axis=1).astype(np.float32)
