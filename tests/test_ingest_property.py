"""Property: on any malformed CSV, load_series returns a valid frame or raises our own error.

A valid frame is sorted, has one row per stamp, steps regularly at the reported ``freq`` in every
series, and holds only finite float64 values. Anything other than an ``InformerflowError`` (a
pandas KeyError, a numpy overflow, ...) is a bug.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from informerflow.config import DataConfig
from informerflow.data.ingest import load_series
from informerflow.errors import InformerflowError

START = pd.Timestamp("2021-03-05 00:00")
STEPS = {"min": pd.Timedelta("1min"), "h": pd.Timedelta("1h"), "D": pd.Timedelta("1D")}

GARBAGE_STAMPS = ["", "xx", "2021-13-45", "99999999999999999999", "-1", "0", "NaT", "2021-03",
                  "9999-12-31", "2021-03-05T00:00:00+05:30", "1e9"]
GARBAGE_VALUES = ["", "nan", "inf", "-inf", "abc", "1,5", "1.5.5", "1_0", "NULL", "-0", "1e400"]


def _stamp(ts: pd.Timestamp, style: str) -> str:
    if style == "iso":
        return str(ts)
    if style == "tz":
        return ts.strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"
    if style == "epoch_s":
        return str(ts.value // 10**9)
    if style == "epoch_ms_relative":
        return str((ts - START).value // 10**6)
    return ts.strftime("%Y-%m-%d")


@st.composite
def csv_files(draw) -> tuple[str, dict]:
    shape = draw(st.sampled_from(["normal"] * 8 + ["empty", "header_only", "one_column"]))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    comma_decimal = sep != "," and draw(st.booleans())
    time_name = draw(st.sampled_from(["date", "Date", "ds", "timestamp", "time", "when"]))
    long_format = draw(st.booleans())
    header = ([time_name] + (["unique_id"] if long_format else [])
              + ["cpu_utilization", "mem"])
    if shape == "empty":
        return draw(st.sampled_from(["", "\n", "  \n\n"])), {}
    if shape == "header_only":
        return sep.join(header) + "\n", {}
    if shape == "one_column":
        return time_name + "\n" + "\n".join(str(START + STEPS["h"] * i) for i in range(5)), {}

    freq = draw(st.sampled_from(sorted(STEPS)))
    style = draw(st.sampled_from(["iso", "iso", "tz", "epoch_s", "epoch_ms_relative", "date"]))
    n = draw(st.integers(min_value=1, max_value=30))
    # Mostly clean input, so that the "returns a valid frame" half of the property gets exercised.
    keep = draw(st.lists(st.sampled_from([True] * 9 + [False]), min_size=n, max_size=n))
    lines = []
    for sid in (["A", "B"] if long_format else [None]):
        for i in range(n):
            if not keep[i] and i not in (0, n - 1):
                continue
            stamp = _stamp(START + STEPS[freq] * i, style)
            values = [f"{draw(st.floats(-1e6, 1e6, allow_nan=False)):.6g}" for _ in range(2)]
            row = [stamp] + ([sid] if sid else []) + values
            lines.append(row)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):  # corrupt some cells
        row = draw(st.sampled_from(lines))
        col = draw(st.integers(0, len(row) - 1))
        pool = GARBAGE_STAMPS if col == 0 else GARBAGE_VALUES
        row[col] = draw(st.sampled_from(pool))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # duplicate some rows
        lines.append(list(draw(st.sampled_from(lines))))
    if draw(st.booleans()):
        lines = draw(st.permutations(lines))
    if comma_decimal:
        lines = [[row[0]] + [c.replace(".", ",") for c in row[1:]] for row in lines]
    text = "\n".join(sep.join(row) for row in [header, *lines]) + "\n"
    options = {
        "sort": draw(st.booleans()),
        "duplicates": draw(st.sampled_from(["error", "last", "mean"])),
        "missing": draw(st.sampled_from(["error", "interpolate", "ffill"])),
        "gaps": draw(st.sampled_from(["interpolate", "ffill", "error"])),
        "max_gap_steps": draw(st.sampled_from([3, 2, 1, 0])),
        "features": draw(st.sampled_from(["S", "M"])),
        "freq": draw(st.sampled_from([None, None, None, freq, "15min"])),
    }
    return text, options


def assert_valid(series) -> None:
    frame = series.frame
    assert list(frame.columns[:1]) == ["date"]
    assert frame["date"].dtype == np.dtype("datetime64[ns]")
    assert len(frame) > 0
    values = frame[series.value_cols]
    assert all(values.dtypes == np.float64)
    assert np.isfinite(values.to_numpy()).all()
    for _, rows in series.iter_series():
        dates = pd.DatetimeIndex(rows["date"])
        expected = pd.date_range(dates[0], periods=len(dates), freq=series.freq)
        assert dates.equals(pd.DatetimeIndex(expected, name="date")), (dates, series.freq)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_load_series_returns_a_valid_frame_or_raises_our_error(case):
    text, options = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.csv"
        path.write_text(text)
        try:
            series = load_series(DataConfig(path=str(path), **options))
        except InformerflowError:
            return
    assert_valid(series)
