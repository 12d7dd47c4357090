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
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from informerflow.config import DataConfig
from informerflow.data.ingest import LoadedSeries, load_series
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


def load_or_raise(content: bytes, options: dict):
    """The loaded series, or None when load_series raised one of our errors."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.csv"
        path.write_bytes(content)
        try:
            return load_series(DataConfig(path=str(path), **options))
        except InformerflowError:
            return None


@settings(max_examples=160, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_malformed_csv_gives_a_valid_frame_or_our_error(case):
    text, options = case
    series = load_or_raise(text.encode(), options)
    if series is not None:
        assert_valid(series)


# Fragments that steer random bytes towards almost-CSV rather than noise.
FRAGMENTS = st.sampled_from(
    list("0123456789,;\t\n-:. \"'eE+Z_") + ["date", "v", "2021-01-01 00:00", "inf", "\r\n", "é"]
)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.lists(FRAGMENTS, max_size=120).map(lambda parts: ("date,v\n" + "".join(parts)).encode()),
    st.binary(max_size=200),
))
def test_arbitrary_bytes_give_a_valid_frame_or_our_error(content):
    series = load_or_raise(content, {"target": "v", "missing": "interpolate"})
    if series is not None:
        assert_valid(series)


def test_the_validity_check_itself_rejects_gaps_and_nan():
    def series(stamps: list[str], values: list[float]) -> LoadedSeries:
        frame = pd.DataFrame({"date": pd.to_datetime(stamps), "v": values})
        return LoadedSeries(frame=frame, source="x", sha256="", time_col="date", target="v",
                            value_cols=["v"], id_col=None, freq="min", tz=None)

    assert_valid(series(["2021-01-01 00:00", "2021-01-01 00:01"], [1.0, 2.0]))
    with pytest.raises(AssertionError):
        assert_valid(series(["2021-01-01 00:00", "2021-01-01 00:02"], [1.0, 2.0]))
    with pytest.raises(AssertionError):
        assert_valid(series(["2021-01-01 00:00", "2021-01-01 00:01"], [1.0, np.nan]))
