"""The monitor's pieces on tiny hand-made inputs (issue 7): actuals, figures, status, CLI.

``test_monitoring.py`` runs the whole loop with a trained model and a live server; here every
figure is checked against a value worked out by hand, with no model and no MLflow store.

The hand-made prediction log (model ``m`` v1, hourly, horizon 4, target ``y``)::

    request A  served 05:00, window 01:00-04:00 = 1 2 3 4, forecasts 05-08 = 11 11 18 44
    request B  served 06:00, window 02:00-05:00 = 2 3 4 5, forecasts 06-09 = 10 23 40 50
    actuals    06:00 = 10, 07:00 = 20, 08:00 = 40 (05:00 and 09:00 not observed yet)

Six of the eight forecasts have an actual; their errors are A +1 -2 +4 and B 0 +3 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from informerflow import state
from informerflow.errors import ConfigError, DataError
from informerflow.monitoring import drift, status
from informerflow.monitoring.monitor import (
    ModelFacts,
    Thresholds,
    VersionReport,
    assess_version,
    read_actuals,
    run_monitor,
)
from informerflow.monitoring.predlog import ForecastRecord, PredictionLog, SeriesForecast

DAY = "2024-01-01T"
LAX = Thresholds(max_mae_ratio=1e9, max_psi=1e9, max_ks=1e9, max_mean_shift=1e9,
                 max_std_ratio=1e9)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty state directory of this test's own."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv(state.ENV_HOME, str(path))
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _hours(first: int, count: int) -> list[str]:
    return [f"{DAY}{h:02d}:00:00" for h in range(first, first + count)]


def _series(sid: str, window_end: int, inputs: list[float], first_target: int,
            values: list[float], column: str = "y") -> SeriesForecast:
    return SeriesForecast(sid, f"{DAY}{window_end:02d}:00:00", "hash", len(inputs),
                          {"y": inputs}, _hours(first_target, len(values)), {column: values})


def _record(served: int, series: list[SeriesForecast], version: str = "1") -> ForecastRecord:
    return ForecastRecord("m", version, "v2", series, served_at=f"{DAY}{served:02d}:00:00")


def _actuals(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    """Long-form actuals as read_actuals returns them: (series, hour, value) of column y."""
    return pd.DataFrame({
        "series_id": [sid for sid, _, _ in rows],
        "time": pd.to_datetime([f"{DAY}{h:02d}:00:00" for _, h, _ in rows]),
        "column": "y",
        "actual": [float(v) for _, _, v in rows],
    })


def _facts(reference: dict[str, drift.ColumnProfile] | None = None, test_mae: float | None = 1.0,
           id_col: str | None = None) -> ModelFacts:
    return ModelFacts("y", ["y"], ["y"], "h", id_col, reference, test_mae)


# Reference of y: mean 1, std 2 (quantiles from -1 to 3), against observed inputs 1..5
# (mean 3, std sqrt 2): a mean shift of exactly +1 sd and a spread of 1/sqrt 2.
REFERENCE = {"y": drift.ColumnProfile.of(np.array([-1.0, 3.0]))}
OBSERVED = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.fixture
def one_series_log(tmp_path: Path) -> PredictionLog:
    """Requests A and B of the module docstring, plus noise the monitor must ignore."""
    store = PredictionLog(tmp_path / "predictions.db")
    store.append([
        _record(5, [_series("", 4, [1, 2, 3, 4], 5, [11, 11, 18, 44])]),
        _record(6, [_series("", 5, [2, 3, 4, 5], 6, [10, 23, 40, 50])]),
        _record(7, [_series("", 6, [9, 9, 9, 9], 6, [99, 99, 99, 99])], version="2"),
        # Its window repeats B's, so the inputs the monitor saw stay 1..5.
        _record(8, [_series("", 5, [2, 3, 4, 5], 6, [77, 77, 77, 77], column="other")]),
    ])
    return store


@pytest.fixture
def one_series_actuals() -> pd.DataFrame:
    return _actuals([("", 6, 10), ("", 7, 20), ("", 8, 40)])


def _assess(store: PredictionLog, actuals: pd.DataFrame, thresholds: Thresholds = LAX,
            facts: ModelFacts | None = None, window: int = 2) -> VersionReport:
    return assess_version("m", "1", store.read(), actuals, facts or _facts(REFERENCE),
                          thresholds, window)


# -- read_actuals -----------------------------------------------------------------------------


def _rows(frame: pd.DataFrame) -> list[tuple[str, str, str, float]]:
    return [(r.series_id, r.time.isoformat(), r.column, r.actual)
            for r in frame.itertuples(index=False)]


def test_reads_semicolon_csv_with_decimal_commas_skipping_empty_cells(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "date;y;x\n2024-01-01 00:00;1,5;2\n"
                                     "2024-01-01 01:00;2,5;\n2024-01-01 02:00;;3\n")
    assert _rows(read_actuals(path, ["y", "x", "absent"])) == [
        ("", "2024-01-01T00:00:00", "y", 1.5),
        ("", "2024-01-01T01:00:00", "y", 2.5),
        ("", "2024-01-01T00:00:00", "x", 2.0),
        ("", "2024-01-01T02:00:00", "x", 3.0),
    ]


def test_reads_epoch_millisecond_stamps(tmp_path: Path) -> None:
    ms = 1_704_067_200_000  # 2024-01-01 00:00 UTC
    path = _write(tmp_path, "a.csv", f"timestamp,y\n{ms},1\n{ms + 3_600_000},2\n"
                                     f"{ms + 7_200_000},3\n")
    frame = read_actuals(path, ["y"])
    assert [t.isoformat() for t in frame["time"]] == _hours(0, 3)
    assert frame["actual"].tolist() == [1.0, 2.0, 3.0]


def test_converts_offsets_to_naive_utc(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,y\n2024-01-01T02:00+02:00,1\n2024-01-01T01:00Z,2\n")
    assert [t.isoformat() for t in read_actuals(path, ["y"])["time"]] == _hours(0, 2)


def test_reads_parquet_with_a_zoned_time_column(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pd.DataFrame({
        "time": pd.date_range("2024-01-01 01:00", periods=3, freq="h", tz="Europe/Berlin"),
        "y": [1.0, np.nan, 3.0],
    }).to_parquet(path)
    assert _rows(read_actuals(path, ["y"])) == [
        ("", "2024-01-01T00:00:00", "y", 1.0),
        ("", "2024-01-01T02:00:00", "y", 3.0),
    ]


def test_a_repeated_stamp_keeps_its_last_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,y\n2024-01-01T00:00,1\n2024-01-01T01:00,2\n"
                                     "2024-01-01T00:00,9\n")
    frame = read_actuals(path, ["y"]).sort_values("time")
    assert frame["actual"].tolist() == [9.0, 2.0]


def test_a_later_empty_cell_does_not_erase_an_observed_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,y,x\n2024-01-01T00:00,1,5\n2024-01-01T00:00,2,\n")
    assert sorted(_rows(read_actuals(path, ["y", "x"]))) == [
        ("", "2024-01-01T00:00:00", "x", 5.0),
        ("", "2024-01-01T00:00:00", "y", 2.0),
    ]


def test_series_ids_are_read_and_stripped(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,pod,y\n2024-01-01,a,1\n2024-01-01, b ,2\n")
    frame = read_actuals(path, ["y"], id_col="pod")
    assert sorted(zip(frame["series_id"], frame["actual"], strict=True)) == [("a", 1.0),
                                                                              ("b", 2.0)]


def test_text_cells_name_the_file_column_and_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", "ds,y\n2024-01-01T00:00,1\n2024-01-01T01:00,oops\n"
                                       "2024-01-01T02:00,n/a\n2024-01-01T03:00,bad\n"
                                       "2024-01-01T04:00,x\n")
    with pytest.raises(DataError, match=r"bad\.csv: column 'y' holds text that is not a number "
                                        r"at data rows 2, 4-5 \(1-based data rows\)"):
        read_actuals(path, ["y"])


def test_a_missing_time_column_names_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "when,y\n2024-01-01,1\n")
    with pytest.raises(DataError, match=r"a\.csv: no time column \(none of date, ds, timestamp, "
                                        r"time\) among when, y; pass --time-col"):
        read_actuals(path, ["y"])
    with pytest.raises(DataError, match=r"--time-col 'stamp' is not a column; the columns are "
                                        r"when, y"):
        read_actuals(path, ["y"], time_col="stamp")
    assert read_actuals(path, ["y"], time_col="when")["actual"].tolist() == [1.0]


def test_the_id_column_is_required_for_a_long_format_model(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,y\n2024-01-01,1\n")
    with pytest.raises(DataError, match=r"a\.csv: the model forecasts several series, but the id "
                                        r"column 'pod' is not in the file \(columns: ds, y\)"):
        read_actuals(path, ["y"], id_col="pod")


def test_a_file_without_any_model_column_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,q\n2024-01-01,1\n")
    with pytest.raises(DataError, match=r"none of the model's columns \(y, x\) is in the file; "
                                        r"its columns are ds, q"):
        read_actuals(path, ["y", "x"])


def test_an_unparseable_stamp_names_its_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", "ds,y\n2024-01-01,1\nnot a date,2\n")
    with pytest.raises(DataError, match=r"a\.csv: column ds: 1 timestamp cannot be parsed "
                                        r"\('not a date'\) at data row 2"):
        read_actuals(path, ["y"])


# -- assess_version: one series ---------------------------------------------------------------


def test_accuracy_and_coverage_are_exact(one_series_log, one_series_actuals) -> None:
    overall = _assess(one_series_log, one_series_actuals).overall
    assert overall["forecasts"] == 8  # version 2 and the column "other" are left out
    assert overall["n_pairs"] == 6
    assert overall["coverage"] == 0.75
    assert overall["mae"] == pytest.approx(10 / 6)
    assert overall["rmse"] == pytest.approx(math.sqrt(30 / 6))
    # |error| / actual: 1/10, 2/20, 4/40, 0, 3/20, 0 -> mean 0.075
    assert overall["mape"] == pytest.approx(7.5)
    assert overall["test_mae"] == 1.0
    assert overall["mae_ratio"] == pytest.approx(10 / 6)


def test_horizon_mae_per_step(one_series_log, one_series_actuals) -> None:
    # step 1: B 06 (0); step 2: A 06 (1), B 07 (3); step 3: A 07 (2), B 08 (0); step 4: A 08 (4)
    horizon = _assess(one_series_log, one_series_actuals).horizon_mae
    assert horizon == pytest.approx([0.0, 2.0, 1.0, 4.0])


def test_accuracy_over_time_in_windows_of_two_hours(one_series_log, one_series_actuals) -> None:
    (series,) = _assess(one_series_log, one_series_actuals).series
    assert series["id"] == ""
    buckets = series["accuracy"]
    # 06:00-08:00 holds A 06, A 07, B 06, B 07; 08:00-10:00 holds A 08 and B 08.
    assert [(b["time"], b["n"]) for b in buckets] == [(f"{DAY}08:00:00", 4),
                                                      (f"{DAY}10:00:00", 2)]
    assert [b["mae"] for b in buckets] == pytest.approx([1.5, 2.0])
    assert [b["rmse"] for b in buckets] == pytest.approx([math.sqrt(14 / 4), math.sqrt(8)])


def test_a_wider_window_puts_every_pair_in_one_bucket(one_series_log,
                                                      one_series_actuals) -> None:
    (series,) = _assess(one_series_log, one_series_actuals, window=24).series
    assert [(b["time"], b["n"]) for b in series["accuracy"]] == [("2024-01-02T00:00:00", 6)]
    assert series["accuracy"][0]["mae"] == pytest.approx(10 / 6)


def test_drift_uses_each_observed_input_stamp_once(one_series_log, one_series_actuals) -> None:
    report = _assess(one_series_log, one_series_actuals)
    expected = drift.measure(REFERENCE["y"], OBSERVED)
    assert expected is not None
    assert report.drift == {"y": pytest.approx(expected.as_dict())}
    assert report.drift["y"]["n"] == 5
    assert report.drift["y"]["mean_shift"] == pytest.approx(1.0)
    assert report.drift["y"]["std_ratio"] == pytest.approx(1 / math.sqrt(2))
    # Per window of two hours: 01:00 | 02:00 03:00 | 04:00 05:00
    (series,) = report.series
    assert [(d["time"], d["n"]) for d in series["drift"]] == [
        (f"{DAY}02:00:00", 1), (f"{DAY}04:00:00", 2), (f"{DAY}06:00:00", 2)]


def test_dashboard_series_hold_actuals_and_one_step_forecasts(one_series_log,
                                                              one_series_actuals) -> None:
    (series,) = _assess(one_series_log, one_series_actuals).series
    assert series["actual"] == {"time": _hours(6, 3), "value": [10.0, 20.0, 40.0]}
    # Only B's 06:00 is a 1-step forecast with an actual.
    assert series["forecast"] == {"time": [f"{DAY}06:00:00"], "value": [10.0]}


def test_no_actual_yet_gives_no_accuracy_and_zero_coverage(one_series_log) -> None:
    report = _assess(one_series_log, _actuals([]))
    assert report.overall["n_pairs"] == 0 and report.overall["coverage"] == 0.0
    assert report.overall["mae"] is None and report.overall["mae_ratio"] is None
    assert report.horizon_mae == [None, None, None, None]
    assert report.series[0]["accuracy"] == []


def test_without_a_reference_there_is_no_drift(one_series_log, one_series_actuals) -> None:
    report = _assess(one_series_log, one_series_actuals, facts=_facts(None))
    assert report.drift == {} and report.series[0]["drift"] == []


# -- alerts -----------------------------------------------------------------------------------


def test_lax_thresholds_raise_nothing(one_series_log, one_series_actuals) -> None:
    report = _assess(one_series_log, one_series_actuals)
    assert report.alerts == [] and not report.alert


def test_accuracy_alert_names_mae_ratio_and_limit(one_series_log, one_series_actuals) -> None:
    report = _assess(one_series_log, one_series_actuals, Thresholds(
        max_mae_ratio=1.5, max_psi=1e9, max_ks=1e9, max_mean_shift=1e9, max_std_ratio=1e9))
    assert report.alerts == ["accuracy: MAE 1.667 is 1.67x the model's test MAE 1 (limit 1.5x)"]
    assert report.alert


def test_no_accuracy_alert_without_a_test_mae(one_series_log, one_series_actuals) -> None:
    report = _assess(one_series_log, one_series_actuals, Thresholds(
        max_mae_ratio=1.0, max_psi=1e9, max_ks=1e9, max_mean_shift=1e9, max_std_ratio=1e9),
        facts=_facts(REFERENCE, test_mae=None))
    assert report.overall["mae_ratio"] is None
    assert report.alerts == []


def _one_drift_alert(store: PredictionLog, actuals: pd.DataFrame, **limits: float) -> str:
    report = _assess(store, actuals, Thresholds(**({
        "max_mae_ratio": 1e9, "max_psi": 1e9, "max_ks": 1e9, "max_mean_shift": 1e9,
        "max_std_ratio": 1e9} | limits)))
    (line,) = report.alerts
    return line


def test_each_drift_criterion_raises_its_own_alert(one_series_log, one_series_actuals) -> None:
    figures = drift.measure(REFERENCE["y"], OBSERVED)
    assert figures is not None
    cases = {
        "max_psi": (figures.psi - 0.01, f"drift: y PSI {figures.psi:.3g} > "),
        "max_ks": (figures.ks - 0.01, f"drift: y KS {figures.ks:.3g} > "),
    }
    for key, (limit, start) in cases.items():
        line = _one_drift_alert(one_series_log, one_series_actuals, **{key: limit})
        assert line == start + f"{limit:g}"
    assert _one_drift_alert(one_series_log, one_series_actuals, max_mean_shift=0.5) == (
        "drift: y mean moved +1 sd (limit 0.5)")
    # 1/sqrt 2 = 0.707 is below 1/1.2 = 0.833: a spread that shrank too much.
    assert _one_drift_alert(one_series_log, one_series_actuals, max_std_ratio=1.2) == (
        "drift: y spread x0.707 (limit x1.2 either way)")


def test_a_spread_within_the_limit_both_ways_raises_nothing(one_series_log,
                                                            one_series_actuals) -> None:
    report = _assess(one_series_log, one_series_actuals, Thresholds(
        max_mae_ratio=1e9, max_psi=1e9, max_ks=1e9, max_mean_shift=1e9, max_std_ratio=1.5))
    assert report.alerts == []  # 0.707 is above 1/1.5 = 0.667


def test_several_drift_criteria_share_one_line(one_series_log, one_series_actuals) -> None:
    line = _one_drift_alert(one_series_log, one_series_actuals, max_mean_shift=0.5,
                            max_std_ratio=1.2)
    assert line == ("drift: y mean moved +1 sd (limit 0.5), "
                    "spread x0.707 (limit x1.2 either way)")


# -- assess_version: several series -----------------------------------------------------------


def test_figures_are_split_per_series(tmp_path: Path) -> None:
    store = PredictionLog(tmp_path / "predictions.db")
    store.append([
        _record(5, [_series("b", 4, [1, 2, 3, 4], 5, [10, 20]),
                    _series("a", 4, [5, 6, 7, 8], 5, [1, 2])]),
    ])
    actuals = _actuals([("a", 5, 2), ("a", 6, 2), ("b", 5, 16), ("c", 5, 0)])
    report = assess_version("m", "1", store.read(), actuals,
                            _facts(REFERENCE, test_mae=None, id_col="pod"), LAX, 2)
    assert report.overall["forecasts"] == 4 and report.overall["n_pairs"] == 3
    assert report.overall["mae"] == pytest.approx((1 + 0 + 6) / 3)
    a, b = report.series
    assert (a["id"], b["id"]) == ("a", "b")
    assert a["overall"]["mae"] == pytest.approx(0.5) and a["overall"]["coverage"] == 1.0
    assert b["overall"]["mae"] == pytest.approx(6.0) and b["overall"]["coverage"] == 0.5
    # inputs of a: 5 6 7 8, mean 6.5 -> (6.5 - 1) / 2 sd
    assert a["drift_overall"]["y"]["n"] == 4 and a["drift_overall"]["y"]["mean_shift"] == 2.75
    assert report.drift["y"]["n"] == 8
    assert a["actual"] == {"time": _hours(5, 2), "value": [2.0, 2.0]}


@pytest.mark.parametrize("since", ["2024-01-01 06:00", "2024-01-01T08:00+02:00"])
def test_since_keeps_only_forecasts_served_at_or_after_it(tmp_path: Path, since: str) -> None:
    store = PredictionLog(tmp_path / "predictions.db")
    store.append([_record(5, [_series("", 4, [1, 2], 5, [1.0])]),
                  _record(7, [_series("", 6, [1, 2], 7, [2.0])])])
    assert store.read(since="2024-01-01T06:00").forecasts["value"].tolist() == [2.0]
    assert store.read(since=since).forecasts["value"].tolist() == [2.0]


# -- thresholds -------------------------------------------------------------------------------


def test_default_thresholds_are_valid() -> None:
    Thresholds().validate()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_psi", 0.0, r"monitor threshold max_psi must be a positive number, got 0\.0"),
        ("max_ks", -0.1, r"monitor threshold max_ks must be a positive number, got -0\.1"),
        ("max_mae_ratio", math.nan, r"max_mae_ratio must be a positive number, got nan"),
        ("max_mean_shift", math.inf, r"max_mean_shift must be a positive number, got inf"),
        ("max_psi", "1.5", r"max_psi must be a positive number, got '1\.5'"),
        ("max_std_ratio", 1.0, r"max_std_ratio must be above 1 \(it bounds the ratio both "
                               r"ways\), got 1\.0"),
        ("max_std_ratio", 0.5, r"max_std_ratio must be above 1"),
    ],
)
def test_bad_thresholds_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Thresholds(**{field: value}).validate()


def test_run_monitor_refuses_bad_settings_before_reading_anything(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=r"window must be 1 step or more \(--window\), got 0"):
        run_monitor(missing, log_path=tmp_path / "p.db", window=0, track=False)
    with pytest.raises(ConfigError, match="max_ks must be a positive number"):
        run_monitor(missing, log_path=tmp_path / "p.db", thresholds=Thresholds(max_ks=-1),
                    track=False)


# -- status -----------------------------------------------------------------------------------


def _report(**overall: float | None) -> VersionReport:
    series = [{"id": "", "actual": {"time": [f"{DAY}06:00:00"], "value": [10.0]},
               "forecast": {"time": [], "value": []}, "accuracy": [], "drift": [],
               "overall": {"mae": 1.5, "coverage": 1.0}, "drift_overall": {"y": {}}}]
    figures = {"mae": 1.5, "rmse": 2.0, "mape": math.nan, "coverage": 0.75, "mae_ratio": 3.0,
               "n_pairs": 6} | overall
    return VersionReport("my model", "4", figures, [1.0, math.nan],
                         {"y": {"psi": 2.5, "ks": 0.5, "mean_shift": np.float64(-1.25),
                                "std_ratio": math.nan, "n": 5}},
                         series, ["accuracy: too far off", "drift: y PSI 2.5 > 1.5"])


def test_status_round_trips_with_nan_as_null(home: Path) -> None:
    path = status.write_status(_report(), "actuals.csv")
    assert path == home / "monitoring" / "my_model" / "v4.json"
    assert not path.with_suffix(".tmp").exists()
    back = status.read_status("my model", "4")
    assert back == json.loads(path.read_text())
    monitor = back["monitor"]
    assert monitor["actuals"] == "actuals.csv"
    assert monitor["alert"] is True
    assert monitor["alerts"] == ["accuracy: too far off", "drift: y PSI 2.5 > 1.5"]
    assert monitor["overall"]["mape"] is None and monitor["overall"]["mae"] == 1.5
    assert monitor["drift"]["y"] == {"psi": 2.5, "ks": 0.5, "mean_shift": -1.25,
                                     "std_ratio": None, "n": 5}
    (series,) = back["series"]
    assert set(series) == {"id", "actual", "forecast", "accuracy", "drift", "overall"}
    assert series["actual"]["value"] == [10.0]


def test_read_status_of_an_unknown_version_is_none(home: Path) -> None:
    assert status.read_status("my model", "9") is None
    assert status.read_status("my model", None) is None


def test_a_corrupt_status_file_is_logged_and_ignored(home: Path, caplog) -> None:
    path = status.status_path("m", "1")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="informerflow.monitoring.status"):
        assert status.read_status("m", "1") is None
    assert "cannot read the monitoring status of m v1" in caplog.text


def _samples(collector: status.MonitorCollector) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in collector.collect() for s in family.samples}


def test_collector_yields_the_gauges_of_the_last_run(home: Path) -> None:
    status.write_status(_report(), "actuals.csv")
    ident = (("model_name", "my model"), ("model_version", "4"))
    samples = _samples(status.MonitorCollector("my model", "4"))

    def key(name: str, **labels: str) -> tuple[str, tuple]:
        return name, tuple(sorted((*ident, *labels.items())))

    ran_at = status.read_status("my model", "4")["monitor"]["ran_at"]
    assert samples.pop(key("informerflow_monitor_last_run_timestamp_seconds")) == (
        pd.Timestamp(ran_at).timestamp())
    assert samples == {
        key("informerflow_monitor_alert", kind="accuracy"): 1.0,
        key("informerflow_monitor_alert", kind="drift"): 1.0,
        key("informerflow_monitor_mae"): 1.5,
        key("informerflow_monitor_rmse"): 2.0,
        key("informerflow_monitor_coverage"): 0.75,
        key("informerflow_monitor_mae_ratio"): 3.0,
        key("informerflow_monitor_drift_psi", column="y"): 2.5,
        key("informerflow_monitor_drift_ks", column="y"): 0.5,
        key("informerflow_monitor_drift_mean_shift", column="y"): -1.25,
    }  # no MAPE and no spread: both were NaN, written as null


def test_collector_of_a_quiet_run_reports_zero_alerts(home: Path) -> None:
    report = _report()
    report.alerts = []
    status.write_status(report, "actuals.csv")
    samples = _samples(status.MonitorCollector("my model", "4"))
    ident = (("model_name", "my model"), ("model_version", "4"))
    for kind in ("accuracy", "drift"):
        name = ("informerflow_monitor_alert", tuple(sorted((*ident, ("kind", kind)))))
        assert samples[name] == 0.0


def test_collector_without_a_run_yields_an_empty_alert_family(home: Path) -> None:
    families = list(status.MonitorCollector("my model", "4").collect())
    assert [f.name for f in families] == ["informerflow_monitor_alert"]
    assert families[0].samples == []


def test_dashboard_data_adds_the_newest_logged_forecast_per_series(home: Path,
                                                                   tmp_path: Path) -> None:
    status.write_status(_report(), "actuals.csv")
    store = PredictionLog(tmp_path / "predictions.db")
    store.append([
        _record(5, [_series("", 4, [1, 2, 3, 4], 5, [11, 12])], version="4"),
        _record(6, [_series("", 5, [2, 3, 4, 5], 6, [21, 22]),
                    _series("b", 5, [2, 3, 4, 5], 6, [31, 32])], version="4"),
        _record(7, [_series("", 6, [3, 4, 5, 6], 7, [91, 92])], version="5"),
    ])
    data = status.dashboard_data("m", "4", "models:/m/4", "y", store.path)
    assert data["model"] == {"name": "m", "version": "4", "uri": "models:/m/4"}
    assert data["monitor"] is None  # the status file written above is of "my model"
    assert [s["id"] for s in data["series"]] == ["", "b"]
    plain, other = data["series"]
    assert plain["latest"] == {"time": _hours(6, 2), "value": [21.0, 22.0]}
    assert other["latest"] == {"time": _hours(6, 2), "value": [31.0, 32.0]}
    assert other["accuracy"] == [] and other["overall"]["mae"] is None


def test_dashboard_data_merges_the_monitor_figures(home: Path, tmp_path: Path) -> None:
    status.write_status(_report(), "actuals.csv")
    store = PredictionLog(tmp_path / "predictions.db")
    store.append([ForecastRecord("my model", "4", "v2", [_series("", 5, [1, 2], 6, [7, 8])],
                                 served_at=f"{DAY}06:00:00")])
    data = status.dashboard_data("my model", "4", None, "y", store.path)
    assert data["monitor"]["overall"]["mae"] == 1.5
    (series,) = data["series"]
    assert series["actual"]["value"] == [10.0]  # from the status file
    assert series["latest"] == {"time": _hours(6, 2), "value": [7.0, 8.0]}  # from the log


def test_dashboard_data_without_a_log_has_empty_latest(home: Path, tmp_path: Path) -> None:
    status.write_status(_report(), "actuals.csv")
    data = status.dashboard_data("my model", "4", None, "y", tmp_path / "absent.db")
    (series,) = data["series"]
    assert series["latest"] == {"time": [], "value": []}
    assert data["monitor"]["overall"]["mape"] is None


# -- the command ------------------------------------------------------------------------------


def test_monitor_command_with_an_empty_state_dir_names_the_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    actuals = _write(tmp_path, "actuals.csv", "ds,y\n2024-01-01,1\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"INFORMERFLOW_HOME": str(home), "COLUMNS": "300"}
    result = subprocess.run([sys.executable, "-m", "informerflow.cli", "monitor", "--actuals",
                             str(actuals)], env=env, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())  # rich may wrap long paths
    assert f"no prediction log at {home / 'predictions.db'}: serve requests first" in message
    assert "point --prediction-log at the file" in message
    assert "Traceback" not in result.stderr + result.stdout
