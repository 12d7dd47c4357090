"""Ingestion: reading, validation and repairs on tiny hand-written files with exact outcomes."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from informerflow.config import DataConfig
from informerflow.data.ingest import LoadedSeries, infer_freq, load_series, read_table
from informerflow.data.readers import sniff_decimal, sniff_separator
from informerflow.data.repair import rows_out_of_order
from informerflow.data.validate import infer_epoch_unit
from informerflow.errors import ConfigError, DataError, DataValidationError

ROWS = r"\(1-based data rows, header not counted\)"


@pytest.fixture
def write(tmp_path):
    """Write text (or bytes) to a file in tmp_path and return its path as a string."""

    def _write(content: str | bytes, name: str = "data.csv") -> str:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    return _write


def load(path: str, **options) -> LoadedSeries:
    return load_series(DataConfig(path=path, **{"target": "v", **options}))


def minutes(values: dict[int, str], header: str = "date,v") -> str:
    """A CSV with one row per given minute of 2021-01-01: ``{minute: "value"}``."""
    rows = [f"2021-01-01 00:{m:02d}:00,{v}" for m, v in values.items()]
    return "\n".join([header, *rows]) + "\n"


# -- reading -----------------------------------------------------------------------------------


def test_read_table_sniffs_semicolons_and_decimal_commas(write):
    path = write("date;v;w\n2021-01-01;1,5;-2,25\n2021-01-02;3,0;4\n")

    typed = read_table(path)
    text = read_table(path, typed=False)

    assert typed["v"].tolist() == [1.5, 3.0]
    assert typed["w"].tolist() == [-2.25, 4.0]
    assert text["v"].tolist() == ["1,5", "3,0"]


def test_read_table_reads_tabs_and_gzip_whatever_the_suffix(write):
    content = b"date\tv\n2021-01-01\t1.5\n2021-01-02\t2.5\n"
    plain = read_table(write(content, "a.tsv"))
    packed = read_table(write(gzip.compress(content), "b.csv"))

    assert plain["v"].tolist() == [1.5, 2.5]
    pd.testing.assert_frame_equal(plain, packed)


def test_read_table_reads_parquet_and_keeps_a_stored_datetime_index(tmp_path):
    stamps = pd.date_range("2021-01-01", periods=3, freq="h", name="date")
    pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=stamps).to_parquet(tmp_path / "x.parquet")

    frame = read_table(tmp_path / "x.parquet")

    assert list(frame.columns) == ["date", "v"]
    assert frame["date"].tolist() == list(stamps)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty; expected a header line and data rows"),
        ("\n \n", "the file is empty"),
        (b"PAR1\x00\x00garbage", "not a readable Parquet file"),
        (b"\x1f\x8bnot really gzip", "looks gzip-compressed but cannot be unpacked"),
        (b"date,v\n\x00\x01\x02", "holds binary data, not CSV text"),
    ],
)
def test_unreadable_files_raise_data_error(write, content, message):
    with pytest.raises(DataError, match=message):
        read_table(write(content))


def test_missing_file_names_the_option(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file; check data.path"):
        load(str(tmp_path / "nope.csv"))


def test_separator_sniffing_needs_agreement_with_the_header():
    lines = ["date;a;b", "2021-01-01;1,5;2,5", "2021-01-02;3,5;4,5"]
    assert sniff_separator(lines) == ";"
    assert sniff_decimal(lines[1:], ";") == ","
    assert sniff_separator(["date,a", "2021-01-01,1"]) == ","
    assert sniff_separator(["date\ta\tb", "x\t1\t2"]) == "\t"
    assert sniff_separator(["only"]) == ","
    assert sniff_decimal(["1.5;2,5", "3.5;4.5"], ";") == "."


def test_latin1_file_loads_with_a_warning(write):
    path = write("date,v\n2021-01-01,1\n2021-01-02,2\n2021-01-03,3\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"1 timestamp cannot be parsed \('# café'\)"):
        load(path)


# -- columns -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Date", "DS", "timestamp", "Time"])
def test_time_column_is_found_by_name_in_any_case(write, name):
    series = load(write(f"{name},v\n2021-01-01,1\n2021-01-02,2\n2021-01-03,4\n"))
    assert series.time_col == name
    assert series.freq == "D"
    assert list(series.frame.columns) == ["date", "v"]


def test_time_column_can_be_named_and_an_unknown_one_lists_the_columns(write):
    path = write("when,v\n2021-01-01,1\n2021-01-02,2\n2021-01-03,4\n")

    assert load(path, time_col="when").time_col == "when"
    with pytest.raises(DataValidationError, match="no time column: none of date, ds, timestamp, "
                       "time \\(any case\\) among the columns when, v; set data.time_col"):
        load(path)
    with pytest.raises(DataValidationError, match="data.time_col 'stamp' is not a column; the "
                       "columns are: when, v"):
        load(path, time_col="stamp")


def test_long_format_unique_id_ds_y_works_as_is(write):
    path = write("unique_id,ds,y\nA,2021-01-01,1\nB,2021-01-01,5\nA,2021-01-02,2\n"
                 "B,2021-01-02,6\nA,2021-01-03,3\nB,2021-01-03,8\n")

    series = load_series(DataConfig(path=path))  # default target absent: y is used

    assert (series.id_col, series.time_col, series.target) == ("unique_id", "ds", "y")
    assert list(series.frame.columns) == ["date", "unique_id", "y"]
    assert series.frame["y"].tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 8.0]
    assert series.series_ids() == ["A", "B"]
    assert [sid for sid, _ in series.iter_series()] == ["A", "B"]
    assert series.warnings == [
        "target 'cpu_utilization' is not a column; using 'y' (long-format convention)"
    ]
    assert series.repairs == []  # interleaved ids are not "out of order"


def test_wide_file_has_no_series_ids(write):
    series = load(write("date,v\n2021-01-01,1\n2021-01-02,2\n"))
    assert series.series_ids() == []
    assert [sid for sid, _ in series.iter_series()] == [None]


def test_long_format_problems_name_the_series(write):
    path = write("unique_id,ds,y\nA,2021-01-01,1\nA,2021-01-02,\nA,2021-01-03,3\n"
                 "B,2021-01-01,4\nB,2021-01-02,4\nB,2021-01-03,4\n")
    with pytest.raises(DataValidationError) as info:
        load(path, target="y")
    assert info.value.problems == [
        f"column y in series 'A': 1 missing value (empty cell) at data row 2 "
        f"{ROWS.replace(chr(92), '')}, first at 2021-01-02 00:00:00; set data.missing to "
        "'interpolate' or 'ffill' to fill them",
        "target y in series 'B' is constant (4.0 in all 3 rows): nothing to forecast; drop the "
        "series or set data.target to another column",
    ]


def test_multivariate_keeps_numeric_columns_with_the_target_last(write):
    path = write("v,date,host,w\n1,2021-01-01,a,10\n2,2021-01-02,b,20\n4,2021-01-03,c,40\n")

    series = load(path, features="M")

    assert series.value_cols == ["w", "v"]
    assert list(series.frame.columns) == ["date", "w", "v"]
    assert series.warnings == ["features M: left out columns that are empty or mostly text: host"]
    assert load(path).value_cols == ["v"]


def test_target_that_is_the_time_column_is_rejected(write):
    with pytest.raises(DataValidationError, match="target 'date' is the time column; set "
                       "data.target to a numeric column"):
        load(write("date,v\n2021-01-01,1\n"), target="date")


# -- timestamps --------------------------------------------------------------------------------


def test_offset_stamps_become_utc_and_the_zone_is_recorded(write):
    path = write("time,v\n2021-01-01T00:00:00+02:00,1\n2021-01-01T01:00:00+02:00,2\n"
                 "2021-01-01T02:00:00+02:00,4\n")

    series = load(path)

    assert series.tz == "+02:00"
    assert series.frame["date"].iloc[0] == pd.Timestamp("2020-12-31 22:00")
    back = series.frame["date"].dt.tz_localize("UTC").dt.tz_convert(series.tz)
    assert str(back.iloc[0]) == "2021-01-01 00:00:00+02:00"


def test_z_suffix_is_utc_and_mixed_offsets_fall_back_to_utc_with_a_warning(write):
    zulu = load(write("time,v\n2021-01-01T00:00Z,1\n2021-01-01T01:00Z,2\n2021-01-01T02:00Z,4\n"))
    dst = load(write("time,v\n2021-03-28T00:00:00+01:00,1\n2021-03-28T01:00:00+01:00,2\n"
                     "2021-03-28T03:00:00+02:00,4\n"))

    assert zulu.tz == "UTC"
    assert dst.tz == "UTC"
    assert dst.freq == "h"
    assert dst.warnings == [
        "column time: stamps mix the UTC offsets +01:00, +02:00 (daylight saving?); they are "
        "converted to UTC and forecasts are returned in UTC"
    ]


def test_stamps_with_and_without_offsets_are_a_problem(write):
    path = write("time,v\n2021-01-01T00:00:00+01:00,1\n2021-01-01T01:00:00,2\n")
    with pytest.raises(DataValidationError, match=f"column time: 1 stamp carry a UTC offset and 1 "
                       f"do not, e.g. data row 2 {ROWS}; give every stamp an offset or none"):
        load(path)


def test_year_month_periods_load_monthly_and_fill_a_missing_month(write):
    series = load(write("date,v\n2021-01,1\n2021-02,2\n2021-03,3\n2021-05,5\n"))

    assert series.freq == "MS"
    assert series.frame["date"].dt.strftime("%Y-%m").tolist() == [
        "2021-01", "2021-02", "2021-03", "2021-04", "2021-05"]
    # Time interpolation weights by days: April 1st is 31 of the 61 days from March to May.
    assert series.frame["v"].iloc[3] == pytest.approx(3 + 2 * 31 / 61, abs=1e-12)


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 10**3), ("us", 10**6),
                                             ("ns", 10**9)])
def test_absolute_epochs_are_read_in_the_inferred_unit(write, unit, scale):
    start = 1609459200  # 2021-01-01 00:00:00 UTC
    rows = "".join(f"{(start + 60 * i) * scale},{i}\n" for i in range(4))

    series = load(write("timestamp,v\n" + rows))

    assert series.freq == "min"
    assert series.frame["date"].iloc[0] == pd.Timestamp("2021-01-01")
    assert f"integer stamps read as {unit} since 1970-01-01" in series.warnings[0]


def test_epoch_unit_inference_uses_the_step_before_the_magnitude():
    assert infer_epoch_unit(np.array([0.0, 60000, 120000])) == (
        "ms", "the median step 60000 is a round interval in ms")
    assert infer_epoch_unit(np.array([0.0, 60, 120]))[0] == "s"
    assert infer_epoch_unit(np.array([0.0, 3_600_000_000, 7_200_000_000]))[0] == "us"
    # Irregular steps: magnitude decides (1.6e12 is a millisecond epoch of 2020).
    assert infer_epoch_unit(np.array([1.6e12, 1.6e12 + 7, 1.6e12 + 19])) == (
        "ms", "the largest value 1600000000019 is in the range of ms epochs")


def test_epoch_unit_option_wins_over_inference(write):
    path = write("timestamp,v\n0,1\n60000,2\n120000,4\n")
    assert load(path).freq == "min"
    series = load(path, epoch_unit="s")
    assert series.freq == "1000min"
    assert series.warnings == []


def test_eight_digit_integers_are_read_as_yyyymmdd_dates(write):
    series = load(write("date,v\n20210104,1\n20210105,2\n20210106,4\n"))
    assert series.frame["date"].iloc[0] == pd.Timestamp("2021-01-04")
    assert series.warnings == ["column date: 8-digit integers read as YYYYMMDD dates"]


def test_four_digit_integers_are_read_as_years(write):
    series = load(write("year,v\n2019,1\n2020,2\n2021,4\n"), time_col="year")
    assert series.freq == "YS"
    assert series.frame["date"].iloc[-1] == pd.Timestamp("2021-01-01")
    assert series.warnings == ["column year: 4-digit integers read as years"]


def test_unparseable_and_empty_stamps_are_listed_with_rows(write):
    path = write("date,v\n2021-01-01,1\nyesterday,2\n,3\n2021-13-45,4\n2021-01-05,5\n")
    with pytest.raises(DataValidationError) as info:
        load(path)
    assert info.value.problems[0] == (
        "column date: 1 empty timestamp at data row 3 (1-based data rows, header not counted); "
        "fill them or delete those rows"
    )
    assert info.value.problems[1].startswith(
        "column date: 2 timestamps cannot be parsed ('yesterday', '2021-13-45') at data rows 2, "
        "4 (1-based data rows, header not counted); write them as ISO 8601"
    )


# -- frequency ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamps", "freq"),
    [
        (pd.date_range("2021-01-01", periods=6, freq="15min"), "15min"),
        (pd.date_range("2021-01-01", periods=6, freq="30s"), "30s"),
        (pd.date_range("2021-01-01", periods=6, freq="h"), "h"),
        (pd.date_range("2021-01-01", periods=6, freq="D"), "D"),
        (pd.bdate_range("2021-01-01", periods=12), "B"),
        (pd.date_range("2021-01-01", periods=6, freq="MS"), "MS"),
        (pd.date_range("2021-01-31", periods=6, freq="ME"), "ME"),
        (pd.date_range("2021-01-01", periods=6, freq="3MS"), "3MS"),
        (pd.date_range("2021-01-04", periods=6, freq="7D"), "7D"),
        (pd.date_range("2001-01-01", periods=4, freq="YS"), "YS"),
    ],
)
def test_infer_freq_names_the_pandas_alias(stamps, freq):
    assert infer_freq(stamps) == freq


def test_infer_freq_tolerates_gaps_and_needs_a_dominant_step():
    gappy = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 00:01", "2021-01-01 00:05",
                              "2021-01-01 00:06", "2021-01-01 00:07"])
    assert infer_freq(gappy) == "min"
    with pytest.raises(DataError, match=r"no regular step: the most common one, 0 days 00:01:00, "
                       r"covers only 1 of 3 steps; set data.freq"):
        infer_freq(pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 00:01", "2021-01-01 00:03",
                                     "2021-01-01 00:06"]))
    with pytest.raises(DataError, match="fewer than 2 distinct timestamps"):
        infer_freq(pd.DatetimeIndex(["2021-01-01"]))


def test_forced_freq_is_used_and_checked(write):
    path = write(minutes({0: "1", 1: "2", 2: "4", 3: "8"}))

    assert load(path, freq="min").freq == "min"
    assert load(path, freq="T").freq == "min"  # old alias, current spelling
    with pytest.raises(DataValidationError, match=f"2 timestamps off the regular 2min grid "
                       f"\\(phase set by most stamps\\): data rows 2, 4 {ROWS}, first "
                       "2021-01-01 00:01:00; resample the file to one step, or set data.freq"):
        load(path, freq="2min")
    with pytest.raises(ConfigError, match="data.freq 'fortnightly' is not a pandas offset alias"):
        load(path, freq="fortnightly")


def test_business_day_holiday_is_filled_as_one_missing_step(write):
    days = pd.bdate_range("2021-01-04", periods=10).delete(7)  # drop Wednesday 13 January
    rows = "".join(f"{d:%Y-%m-%d},{i}\n" for i, d in enumerate(days))

    series = load(write("Date,v\n" + rows))

    assert series.freq == "B"
    assert len(series.frame) == 10
    assert series.repairs == [
        "filled 1 missing B step in v by time interpolation (data.gaps='interpolate', "
        "max_gap_steps 3): 2021-01-13 00:00:00"
    ]


# -- gaps --------------------------------------------------------------------------------------


def test_short_gap_is_interpolated_in_time_and_only_new_rows_are_written(write):
    series = load(write(minutes({0: "0", 1: "4", 2: "8", 6: "24", 7: "27.5"})))

    assert series.frame["v"].tolist() == [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 27.5]
    assert series.repairs == [
        "filled 3 missing min steps in v by time interpolation (data.gaps='interpolate', "
        "max_gap_steps 3): 2021-01-01 00:03:00 to 2021-01-01 00:05:00 (3 steps)"
    ]


def test_gap_longer_than_max_gap_steps_names_start_end_and_count(write):
    path = write(minutes({0: "0", 1: "4", 6: "24", 7: "28"}))
    with pytest.raises(DataValidationError, match=r"gap of 4 missing min steps from 2021-01-01 "
                       r"00:02:00 to 2021-01-01 00:05:00 \(between data rows 2 and 3, 1-based data "
                       r"rows, header not counted\): longer than data.max_gap_steps \(3\); fill "
                       r"it in the file, or raise data.max_gap_steps to 4"):
        load(path)
    assert load(path, max_gap_steps=4).frame["v"].tolist() == [0, 4, 8, 12, 16, 20, 24, 28]


def test_gaps_error_policy_and_zero_max_gap_steps_reject_any_gap(write):
    path = write(minutes({0: "0", 1: "4", 3: "12"}))
    message = (r"gap of 1 missing min step at 2021-01-01 00:02:00 \(between data rows 2 and 3, "
               r"1-based data rows, header not counted\)")
    with pytest.raises(DataValidationError, match=message + r"; set data.gaps to 'interpolate' "
                       r"or 'ffill' to fill gaps of up to data.max_gap_steps \(3\) steps"):
        load(path, gaps="error")
    with pytest.raises(DataValidationError, match=message + ": longer than data.max_gap_steps"):
        load(path, max_gap_steps=0)


def test_ffill_gap_policy_repeats_the_value_before_the_gap(write):
    series = load(write(minutes({0: "1", 1: "2", 4: "9"})), gaps="ffill")
    assert series.frame["v"].tolist() == [1.0, 2.0, 2.0, 2.0, 9.0]
    assert "by carrying the last value forward (data.gaps='ffill'" in series.repairs[0]


def test_odd_stamp_off_the_grid_is_a_problem_not_a_new_phase(write):
    path = write("date,v\n2021-01-01 00:00:00,1\n2021-01-01 00:01:00,2\n2021-01-01 00:01:30,3\n"
                 "2021-01-01 00:02:00,4\n2021-01-01 00:03:00,5\n2021-01-01 00:04:00,6\n")
    with pytest.raises(DataValidationError, match=f"1 timestamp off the regular min grid \\(phase "
                       f"set by most stamps\\): data row 3 {ROWS}, first 2021-01-01 00:01:30"):
        load(path)


# -- missing, text and infinite values ---------------------------------------------------------


def test_missing_and_gap_repairs_change_only_their_own_cells(write):
    path = write("date,v,w\n2021-01-01 00:00,1.25,10\n2021-01-01 00:01,,11\n"
                 "2021-01-01 00:02,3.75,\n2021-01-01 00:04,6.0,14\n2021-01-01 00:05,7.5,15\n")

    series = load(path, features="M", missing="ffill", gaps="interpolate")

    # Empty cells take the previous value; the 00:03 row is new and interpolated; nothing else
    # differs from the file.
    assert series.frame["v"].tolist() == [1.25, 1.25, 3.75, 4.875, 6.0, 7.5]
    assert series.frame["w"].tolist() == [10.0, 11.0, 11.0, 12.5, 14.0, 15.0]
    assert series.repairs == [
        "filled 1 missing min step in w, v by time interpolation (data.gaps='interpolate', "
        "max_gap_steps 3): 2021-01-01 00:03:00",
        "filled 1 missing value in column w by carrying the last value forward "
        "(data.missing='ffill'): data row 3 (1-based data rows, header not counted), "
        "2021-01-01 00:02:00",
        "filled 1 missing value in column v by carrying the last value forward "
        "(data.missing='ffill'): data row 2 (1-based data rows, header not counted), "
        "2021-01-01 00:01:00",
    ]


def test_leading_and_trailing_missing_values_cannot_be_interpolated(write):
    path = write(minutes({0: "", 1: "2", 2: "3", 3: ""}))
    with pytest.raises(DataValidationError, match=f"column v: 2 missing values before the first or "
                       f"after the last known value at data rows 1, 4 {ROWS}, first at 2021-01-01 "
                       "00:00:00; data.missing='interpolate' cannot fill them; delete those rows"):
        load(path, missing="interpolate")
    with pytest.raises(DataValidationError, match="column v: 1 missing value before the first "
                       "known value at data row 1"):
        load(path, missing="ffill")


def test_text_and_infinite_cells_are_never_filled_by_the_missing_policy(write):
    path = write(minutes({0: "1", 1: "oops", 2: "inf", 3: "4", 4: ""}))
    with pytest.raises(DataValidationError) as info:
        load(path, missing="ffill")
    assert info.value.problems == [
        "column v: 1 cell holds text that is not a number at data row 2 (1-based data rows, "
        "header not counted), first at 2021-01-01 00:01:00; correct them, or empty them and set "
        "data.missing to fill them",
        "column v: 1 infinite value at data row 3 (1-based data rows, header not counted), first "
        "at 2021-01-01 00:02:00; replace them, or empty them and set data.missing to fill them",
    ]


def test_one_pass_reports_every_problem_of_a_file(write):
    path = write(
        "date,v\n"
        "2021-01-01 00:00,1\n"  # row 1
        "soon,2\n"  # row 2: unparseable stamp
        "2021-01-01 00:02,abc\n"  # row 3: text
        "2021-01-01 00:03,-inf\n"  # row 4: infinite
        "2021-01-01 00:04,4\n"  # row 5
        "2021-01-01 00:04,5\n"  # row 6: duplicate stamp
        "2021-01-01 00:05,\n"  # row 7: missing
        "2021-01-01 00:06,7\n"
        "2021-01-01 00:07,8\n"
        "2021-01-01 00:08,9\n"
        "2021-01-01 00:15,9\n"  # row 11: 6-step gap
    )
    with pytest.raises(DataValidationError) as info:
        load(path)

    problems = info.value.problems
    assert info.value.source == path
    assert len(problems) == 6
    assert str(info.value).startswith(f"{path}: 6 problems found:\n  - column date: 1 timestamp")
    expected_starts = [
        "column date: 1 timestamp cannot be parsed ('soon') at data row 2",
        "column v: 1 cell holds text that is not a number at data row 3",
        "column v: 1 infinite value at data row 4",
        "1 timestamp appears more than once: 2021-01-01 00:04:00 (data rows 5-6)",
        "gap of 6 missing min steps from 2021-01-01 00:09:00 to 2021-01-01 00:14:00 (between "
        "data rows 10 and 11",
        "column v: 1 missing value (empty cell) at data row 7",
    ]
    for problem, start in zip(problems, expected_starts, strict=True):
        assert problem.startswith(start), problem


# -- order and duplicates ----------------------------------------------------------------------


def test_rows_out_of_order_counts_the_fewest_moves():
    assert rows_out_of_order(np.array([1, 2, 3])) == 0
    assert rows_out_of_order(np.array([4, 1, 2, 3])) == 1  # one row at the wrong end
    assert rows_out_of_order(np.array([3, 2, 1])) == 2
    assert rows_out_of_order(np.array([1, 1, 2])) == 0  # ties are in order


def test_sorting_warns_with_the_count_and_sort_off_keeps_sorted_files(write):
    shuffled = write("date,v\n2021-01-01 00:03,4\n2021-01-01 00:00,1\n2021-01-01 00:01,2\n"
                     "2021-01-01 00:02,3\n")
    tidy = write(minutes({0: "1", 1: "2", 2: "3"}), "tidy.csv")

    series = load(shuffled)

    assert series.frame["v"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert series.warnings == ["1 of 4 rows were out of time order (the fewest rows that must "
                               "move to sort the file); they were sorted"]
    assert load(tidy, sort=False).warnings == []


def test_long_format_duplicates_are_resolved_per_series(write):
    path = write("unique_id,ds,y\nA,2021-01-01,1\nA,2021-01-01,3\nA,2021-01-02,4\n"
                 "B,2021-01-01,1\nB,2021-01-02,2\n")
    with pytest.raises(DataValidationError, match=f"1 timestamp appears more than once in series "
                       f"'A': 2021-01-01 00:00:00 \\(data rows 1-2\\) {ROWS}; set "
                       "data.duplicates to 'last' or 'mean'$"):
        load(path, target="y")
    series = load(path, target="y", duplicates="mean")
    assert series.frame["y"].tolist() == [2.0, 4.0, 1.0, 2.0]
    assert series.repairs == [
        "resolved 1 duplicated timestamp in series 'A' by averaging their values "
        "(data.duplicates='mean'): 2021-01-01 00:00:00 (data rows 1-2) (1-based data rows, "
        "header not counted)"
    ]


def test_duplicates_without_an_id_column_hint_at_long_format(write):
    path = write("date,v\n2021-01-01,1\n2021-01-01,2\n2021-01-02,3\n")
    with pytest.raises(DataValidationError, match="if the file holds several series, set "
                       "data.id_col to their id column"):
        load(path)


# -- content and structure ---------------------------------------------------------------------


def test_constant_and_empty_targets_are_problems(write):
    with pytest.raises(DataValidationError, match=r"target v is constant \(2.5 in all 3 rows\): "
                       "nothing to forecast"):
        load(write(minutes({0: "2.5", 1: "2.5", 2: "2.5"})))
    with pytest.raises(DataValidationError) as info:
        load(write(minutes({0: "", 1: "", 2: ""})), missing="interpolate")
    assert info.value.problems == [
        "target v has no values (3 rows, all empty); fill the column or set data.target to "
        "another column"
    ]


def test_header_only_file_has_no_data_rows(write):
    with pytest.raises(DataValidationError, match=r"no data rows: the file has a header \(date, "
                       r"v\) but no rows"):
        load(write("date,v\n"))


def test_blank_lines_are_skipped_but_still_counted_in_row_numbers(write):
    path = write("date,v\n2021-01-01,1\n\n2021-01-02,x\n2021-01-03,3\n")
    with pytest.raises(DataValidationError, match=f"1 cell holds text that is not a number at data "
                       f"row 3 {ROWS}"):
        load(path)
    series = load(write("date,v\n2021-01-01,1\n\n2021-01-02,2\n2021-01-03,3\n"))
    assert series.warnings == ["skipped 1 blank line at data row 2 (1-based data rows, header "
                               "not counted)"]


def test_rows_with_extra_fields_are_reported(write):
    path = write("date,v\n2021-01-01,1,7\n2021-01-02,2\n2021-01-03,3,8,9\n")
    with pytest.raises(DataValidationError, match=f"2 rows with more fields than the header's 2 "
                       f"at data rows 1, 3 {ROWS}; remove the extra separators"):
        load(path)


def test_invalid_options_are_config_errors_listing_each(write):
    path = write(minutes({0: "1", 1: "2"}))
    with pytest.raises(ConfigError) as info:
        load(path, duplicates="first", epoch_unit="m", max_gap_steps=-1)
    assert str(info.value) == (
        "invalid data options:\n"
        "  - data.duplicates must be one of error, last, mean; got 'first'\n"
        "  - data.epoch_unit must be one of s, ms, us, ns; got 'm'\n"
        "  - data.max_gap_steps must be an integer >= 0; got -1"
    )


def test_parquet_with_zone_aware_index_and_integer_ids(tmp_path):
    stamps = pd.date_range("2021-01-01", periods=3, freq="h", tz="Europe/Berlin", name="date")
    frame = pd.DataFrame({"unique_id": [7, 7, 7], "v": [1.0, 2.0, 4.0]}, index=stamps)
    frame.to_parquet(tmp_path / "x.parquet")

    series = load(str(tmp_path / "x.parquet"), id_col="unique_id")

    assert series.tz == "Europe/Berlin"
    assert series.series_ids() == ["7"]
    assert series.frame["date"].iloc[0] == pd.Timestamp("2020-12-31 23:00")


def test_a_huge_max_gap_steps_cannot_make_ingestion_invent_millions_of_rows(write):
    stamps = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 00:01", "2021-01-01 00:02"])
    stamps = stamps.append(pd.DatetimeIndex([stamps[-1] + pd.Timedelta(minutes=2_000_000)]))
    rows = "".join(f"{ts},{i}\n" for i, ts in enumerate(stamps))
    with pytest.raises(DataValidationError, match="filling the gaps would add more than 1000000 "
                       "rows; lower data.max_gap_steps or resample the file"):
        load(write("date,v\n" + rows), max_gap_steps=10**9)


def test_nanosecond_epochs_keep_every_digit(write):
    rows = "".join(f"{1609459200001000000 + i * 1_000_000},{i}\n" for i in range(4))

    series = load(write("timestamp,v\n" + rows))

    assert series.freq == "ms"
    assert series.frame["date"].iloc[0] == pd.Timestamp("2021-01-01 00:00:00.001")
    # 1 ms steps would be a round 1 s in microseconds, but those values overflow as microseconds.
    assert series.warnings[0].startswith(
        "column timestamp: integer stamps read as ns since 1970-01-01 because the largest value "
        "1609459200004000000 is in the range of ns epochs"
    )
