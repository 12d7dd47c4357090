"""Calendar features: which columns each frequency gets, their exact values, and the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from informerflow.errors import ConfigError
from informerflow.timefeatures import (
    CALENDAR_TABLE_SIZES,
    feature_names,
    n_time_features,
    time_features,
)


def stamps(*texts: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(t) for t in texts])


def test_minute_features_span_the_whole_range() -> None:
    # 2021-01-01 is a Friday (weekday 4), day 1 of the year.
    out = time_features(stamps("2021-01-01 00:00", "2021-12-31 23:59"), "min", "timeF")
    assert out.dtype == np.float32
    assert feature_names("min", "timeF") == (
        "minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"
    )
    np.testing.assert_allclose(out[0], [-0.5, -0.5, 4 / 6 - 0.5, -0.5, -0.5], atol=1e-7)
    # 2021-12-31 is a Friday, day 365 of a non-leap year.
    np.testing.assert_allclose(out[1], [0.5, 0.5, 4 / 6 - 0.5, 0.5, 364 / 365 - 0.5], atol=1e-7)


def test_fifteen_minute_multiple_keeps_minute_features() -> None:
    # 2024-03-01 is a Friday and day 61 of a leap year.
    out = time_features(stamps("2024-03-01 10:15", "2024-03-01 10:45"), "15min", "timeF")
    expected_first = [15 / 59 - 0.5, 10 / 23 - 0.5, 4 / 6 - 0.5, -0.5, 60 / 365 - 0.5]
    np.testing.assert_allclose(out[0], expected_first, atol=1e-7)
    np.testing.assert_allclose(out[1, 0], 45 / 59 - 0.5, atol=1e-7)


def test_thirty_seconds_adds_second_of_minute() -> None:
    out = time_features(stamps("2024-03-01 10:15:30"), "30s", "timeF")
    assert out.shape == (1, 6)
    assert n_time_features("30s", "timeF") == 6
    np.testing.assert_allclose(out[0, :2], [30 / 59 - 0.5, 15 / 59 - 0.5], atol=1e-7)


def test_hourly_multiples_drop_the_minute() -> None:
    out = time_features(stamps("2024-03-02 22:00"), "2h", "timeF")  # a Saturday
    assert feature_names("2h", "timeF")[0] == "hour_of_day"
    np.testing.assert_allclose(
        out[0], [22 / 23 - 0.5, 5 / 6 - 0.5, 1 / 30 - 0.5, 61 / 365 - 0.5], atol=1e-7
    )
    np.testing.assert_array_equal(time_features(stamps("2024-03-02 22:00"), "h", "timeF"), out)


def test_legacy_upper_case_aliases_are_translated_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert n_time_features("H", "timeF") == n_time_features("h", "timeF") == 4
        assert n_time_features("15T", "timeF") == 5
        assert n_time_features("M", "timeF") == 1


def test_daily_and_business_day_features() -> None:
    out = time_features(stamps("2023-12-31"), "D", "timeF")  # a Sunday, day 365
    np.testing.assert_allclose(out[0], [0.5, 0.5, 364 / 365 - 0.5], atol=1e-7)
    out_b = time_features(stamps("2024-01-05"), "B", "timeF")  # a Friday, day 5
    np.testing.assert_allclose(out_b[0], [4 / 6 - 0.5, 4 / 30 - 0.5, 4 / 365 - 0.5], atol=1e-7)


def test_coarse_frequencies() -> None:
    assert feature_names("W-MON", "timeF") == ("day_of_month", "week_of_year")
    out = time_features(stamps("2024-01-01"), "W-MON", "timeF")  # ISO week 1
    np.testing.assert_allclose(out[0], [-0.5, -0.5], atol=1e-7)
    assert time_features(stamps("2024-12-31"), "ME", "timeF")[0, 0] == pytest.approx(0.5)
    assert n_time_features("QS", "timeF") == n_time_features("YE", "timeF") == 1


def test_calendar_indices_for_embedding_tables() -> None:
    out = time_features(stamps("2024-03-01 10:15", "2024-12-31 23:59"), "15min", "fixed")
    # month, day, weekday, hour, minute // 15
    np.testing.assert_array_equal(out, [[3, 1, 4, 10, 1], [12, 31, 1, 23, 3]])
    assert out.dtype == np.float32
    assert n_time_features("h", "learned") == 4
    assert n_time_features("B", "fixed") == 3
    assert (out.max(axis=0) < np.asarray(CALENDAR_TABLE_SIZES)).all()


def test_a_year_of_hourly_features_stays_in_range() -> None:
    out = time_features(pd.date_range("2024-01-01", "2024-12-31 23:00", freq="h"), "h", "timeF")
    assert out.shape == (366 * 24, 4)
    assert out.min() == -0.5
    assert out.max() <= 0.5 + 1e-7


def test_empty_stamps_give_an_empty_matrix() -> None:
    assert time_features(pd.DatetimeIndex([]), "h", "timeF").shape == (0, 4)


def test_unknown_freq_names_it_and_lists_the_bases() -> None:
    with pytest.raises(ConfigError, match=r"model.freq 'fortnight' .*supported bases: s .*min, h"):
        n_time_features("fortnight", "timeF")
    with pytest.raises(ConfigError, match="model.freq '' is not a frequency"):
        time_features(stamps("2024-01-01"), "", "timeF")


def test_freq_without_calendar_resolution_is_refused() -> None:
    # A 52-53 week fiscal year parses as a pandas offset but has no calendar resolution here.
    with pytest.raises(ConfigError, match=r"'RE-N-DEC-MON' \(FY5253\) has no calendar features"):
        n_time_features("RE-N-DEC-MON", "timeF")


def test_unknown_embed_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.embed must be one of timeF, fixed, learned"):
        n_time_features("h", "onehot")
