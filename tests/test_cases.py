"""The shared ingest cases (/work/shared/cases/README.md): one test per file, exact outcomes."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from _paths import SHARED
from informerflow.config import DataConfig, ModelConfig
from informerflow.data.ingest import BUNDLED, load_series
from informerflow.data.windows import split_bounds
from informerflow.errors import DataError, DataValidationError

CASES = SHARED / "cases" / "ingest"
POD_MS = SHARED / "data" / "alibaba-pod" / "MS_25215_MS_25215_POD_372_utilization.csv"



def case(name: str, **options) -> DataConfig:
    return DataConfig(path=str(CASES / name), **options)


def raw(name: str) -> pd.DataFrame:
    return pd.read_csv(CASES / name)


def test_bundled_file_fills_its_one_missing_minute_by_interpolation():
    series = load_series(DataConfig())

    assert len(series.frame) == 18720
    assert series.freq == "min"
    assert series.source == "bundled:processed_data.csv"
    assert series.value_cols == ["cpu_utilization"]
    assert list(series.frame.columns) == ["date", "cpu_utilization"]
    assert series.repairs == [
        "filled 1 missing min step in cpu_utilization by time interpolation "
        "(data.gaps='interpolate', max_gap_steps 3): 1970-01-06 04:08:00"
    ]
    frame = series.frame.set_index("date")["cpu_utilization"]
    before, after = frame[pd.Timestamp("1970-01-06 04:07")], frame[pd.Timestamp("1970-01-06 04:09")]
    assert frame[pd.Timestamp("1970-01-06 04:08")] == pytest.approx((before + after) / 2, abs=1e-15)


def test_bundled_hash_is_the_published_hash_of_the_uncompressed_csv():
    series = load_series(DataConfig())
    # The README of the bundled data publishes this hash for processed_data.csv.
    assert series.sha256 == "ad4bc4850e48076d9bc49f6a13b548fdf6f475400113a00b8aa75b4ade331f0d"
    assert gzip.decompress(BUNDLED.read_bytes()).startswith(b"date,cpu_utilization")


def test_bundled_values_other_than_the_filled_minute_are_the_files():
    series = load_series(DataConfig())
    original = pd.read_csv(BUNDLED, parse_dates=["date"]).set_index("date")["cpu_utilization"]
    loaded = series.frame.set_index("date")["cpu_utilization"]
    assert loaded.drop(pd.Timestamp("1970-01-06 04:08")).equals(original)


def test_semicolon_decimal_comma_loads_without_format_options():
    series = load_series(case("semicolon_decimal_comma.csv", target="OT"))

    assert series.freq == "h"
    assert len(series.frame) == 400
    assert series.frame["OT"].iloc[0] == pytest.approx(30.531000137329, rel=1e-13)
    assert series.frame["OT"].iloc[0] == 30.5310001373291  # every digit of the file kept


def test_semicolon_decimal_comma_multivariate_keeps_all_seven_columns_target_last():
    series = load_series(case("semicolon_decimal_comma.csv", target="OT", features="M"))

    assert series.value_cols == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert series.frame["HUFL"].iloc[0] == 5.827000141143799
    assert series.frame["LULL"].iloc[1] == 1.371000051498413


def test_target_is_chosen_by_name_wherever_it_stands():
    multi = load_series(case("target_first_column.csv", target="cpu", features="MS"))
    single = load_series(case("target_first_column.csv", target="cpu"))

    assert multi.value_cols == ["mem", "cpu"]  # target last: the model's output channel
    assert single.value_cols == ["cpu"]
    assert multi.time_col == "date"
    assert single.frame["cpu"].iloc[0] == 0.0455611111123321
    assert multi.frame["mem"].iloc[0] == 0.4245619773864746


def test_unknown_target_is_an_error_listing_the_columns():
    with pytest.raises(DataValidationError, match="target 'load' is not a column; the columns "
                       "are: cpu, date, mem; set data.target") as info:
        load_series(case("target_first_column.csv", target="load"))
    assert len(info.value.problems) == 1


def test_nan_cells_default_error_names_column_count_and_first_timestamp():
    with pytest.raises(DataValidationError) as info:
        load_series(case("nan_cells.csv"))

    assert info.value.problems == [
        "column cpu_utilization: 5 missing values (empty cells) at data rows 1201-1205 "
        "(1-based data rows, header not counted), first at 1970-01-01 20:00:00; "
        "set data.missing to 'interpolate' or 'ffill' to fill them"
    ]
    assert str(info.value).startswith(f"{CASES / 'nan_cells.csv'}: 1 problem found:")


def test_nan_cells_interpolate_fills_linearly_in_time_and_says_so():
    series = load_series(case("nan_cells.csv", missing="interpolate", features="M"))
    file = raw("nan_cells.csv")
    cpu = series.frame["cpu_utilization"].to_numpy()

    left, right = file["cpu_utilization"].iloc[1199], file["cpu_utilization"].iloc[1205]
    expected = left + (right - left) * np.arange(1, 6) / 6
    np.testing.assert_allclose(cpu[1200:1205], expected, rtol=0, atol=1e-15)
    assert series.repairs == [
        "filled 5 missing values in column cpu_utilization by time interpolation "
        "(data.missing='interpolate'): data rows 1201-1205 (1-based data rows, header not "
        "counted), 1970-01-01 20:00:00 to 1970-01-01 20:04:00"
    ]
    # Only the empty cells changed.
    keep = np.r_[0:1200, 1205:3000]
    assert np.array_equal(cpu[keep], file["cpu_utilization"].to_numpy()[keep])
    assert np.array_equal(series.frame["memory_utilization"], file["memory_utilization"])


def test_nan_cells_ffill_repeats_the_last_value():
    series = load_series(case("nan_cells.csv", missing="ffill"))
    cpu = series.frame["cpu_utilization"].to_numpy()
    assert np.all(cpu[1200:1205] == raw("nan_cells.csv")["cpu_utilization"].iloc[1199])
    assert "by carrying the last value forward (data.missing='ffill')" in series.repairs[0]


def test_duplicate_timestamps_default_error_names_both():
    with pytest.raises(DataValidationError) as info:
        load_series(case("duplicate_timestamps.csv"))

    (problem,) = info.value.problems
    assert problem.startswith(
        "2 timestamps appear more than once: 1970-01-01 11:40:00 (data rows 701-702); "
        "1970-01-02 01:00:00 (data rows 1502-1503) (1-based data rows, header not counted); "
        "set data.duplicates to 'last' or 'mean'"
    )


@pytest.mark.parametrize(
    ("policy", "at_1140", "at_0100"),
    [
        ("last", 0.10334833333342486, 0.0630316666658424),
        ("mean", (0.0688988888889499 + 0.10334833333342486) / 2,
         (0.0420211111105616 + 0.0630316666658424) / 2),
    ],
)
def test_duplicate_policies_load_and_touch_only_duplicated_rows(policy, at_1140, at_0100):
    series = load_series(case("duplicate_timestamps.csv", duplicates=policy))
    cpu = series.frame.set_index("date")["cpu_utilization"]

    assert len(cpu) == 3000
    assert cpu[pd.Timestamp("1970-01-01 11:40")] == at_1140
    assert cpu[pd.Timestamp("1970-01-02 01:00")] == at_0100
    file = raw("duplicate_timestamps.csv").drop_duplicates("date", keep=False)
    file = file.set_index(pd.to_datetime(file["date"]))["cpu_utilization"]
    assert cpu.loc[file.index].equals(file.rename_axis("date"))


def test_unsorted_rows_are_sorted_with_a_warning_and_equal_the_sorted_file(tmp_path):
    series = load_series(case("unsorted_rows.csv", features="M"))
    lines = (CASES / "unsorted_rows.csv").read_text().splitlines()
    sorted_file = tmp_path / "sorted.csv"
    sorted_file.write_text("\n".join([lines[0], *sorted(lines[1:])]) + "\n")
    reference = load_series(DataConfig(path=str(sorted_file), features="M"))

    assert series.warnings == [
        "2899 of 3000 rows were out of time order (the fewest rows that must move to sort the "
        "file); they were sorted"
    ]
    assert series.repairs == ["sorted rows by time (data.sort=true): 2899 rows moved"]
    assert reference.warnings == [] and reference.repairs == []
    pd.testing.assert_frame_equal(series.frame, reference.frame)


def test_unsorted_rows_with_sort_off_is_an_error_naming_the_first_late_row():
    with pytest.raises(DataValidationError, match=r"rows are not in time order: 2899 rows out "
                       r"of order, first data row 3 \(1-based.*\) at 1970-01-01 09:28:00 comes "
                       r"after a later stamp; set data.sort=true"):
        load_series(case("unsorted_rows.csv", sort=False))


def test_business_days_are_inferred_as_B_from_a_capitalised_Date_column():
    series = load_series(case("business_days_only.csv", target="Close"))

    assert series.freq == "B"
    assert series.time_col == "Date"
    assert len(series.frame) == 700
    dates = pd.DatetimeIndex(series.frame["date"])
    assert dates.equals(pd.bdate_range("2021-01-04", periods=700, name="date"))
    assert series.repairs == []


def test_too_short_file_fails_in_split_bounds_naming_the_split_and_rows():
    series = load_series(case("too_short.csv"))
    cfg, model = DataConfig(), ModelConfig(seq_len=96, pred_len=6)

    assert len(series.frame) == 40
    with pytest.raises(DataError, match=r"too few rows \(40\).*the train split has 28 rows but "
                       r"needs at least 102 \(seq_len 96 \+ pred_len 6\)"):
        split_bounds(len(series.frame), cfg.train_frac, cfg.val_frac, model.seq_len,
                     model.pred_len)


@pytest.mark.skipif(not POD_MS.is_file(), reason="pod data not mounted")
def test_millisecond_since_trace_start_pod_file_loads_as_minutes():
    series = load_series(DataConfig(path=str(POD_MS)))

    assert series.freq == "min"
    assert len(series.frame) == 2875
    assert series.time_col == "timestamp"
    assert series.frame["date"].iloc[0] == pd.Timestamp("1970-01-01 00:00")
    assert series.frame["date"].iloc[-1] == pd.Timestamp("1970-01-02 23:54")
    assert series.warnings == [
        "column timestamp: integer stamps read as ms since 1970-01-01 because the median step "
        "60000 is a round interval in ms; set data.epoch_unit to override"
    ]


@pytest.mark.skipif(not POD_MS.is_file(), reason="pod data not mounted")
def test_epoch_unit_option_overrides_the_inference():
    series = load_series(DataConfig(path=str(POD_MS), epoch_unit="s"))
    assert series.freq == "1000min"  # 60000 s steps, as told
    assert series.warnings == []
