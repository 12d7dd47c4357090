"""Load a user's time-series file into a validated, regular frame: read, check, repair.

``load_series(cfg.data)`` is the one entry point. It reads the file (``readers``), makes one
validation pass that collects every problem (``validate``), and applies only the repairs the
options ask for (``repair``), each reported in ``LoadedSeries.repairs``. If any problem remains,
it raises a single ``DataValidationError`` listing all of them, each with the column, series,
1-based data row (header not counted), timestamp and the option that would fix it.

Stages, in order: columns -> timestamps -> cells (text, inf) -> order (data.sort) -> duplicates
(data.duplicates) -> frequency (data.freq) -> grid and gaps (data.gaps, data.max_gap_steps) ->
missing values (data.missing) -> empty or constant targets.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from informerflow.config import DataConfig
from informerflow.data.readers import (
    BUNDLED,
    BUNDLED_SOURCE,
    RawTable,
    parse_table,
    read_bytes,
    read_table,
    to_float,
    unpack,
)
from informerflow.data.repair import (
    POLICY_WORDS,
    fill_cells,
    fill_new_rows,
    merge_duplicates,
    rows_out_of_order,
)
from informerflow.data.validate import (
    EPOCH_UNITS,
    ROWS_NOTE,
    Gap,
    check_grid,
    fmt_rows,
    fmt_ts,
    in_series,
    infer_freq,
    infer_step,
    normalise_freq,
    parse_stamps,
    plural,
)
from informerflow.errors import ConfigError, DataValidationError

__all__ = ["BUNDLED", "LoadedSeries", "infer_freq", "load_series", "read_table"]

log = logging.getLogger(__name__)

TIME_NAMES = ("date", "ds", "timestamp", "time")
ID_NAMES = ("unique_id",)
FALLBACK_TARGET = "y"
_SID = "\x00sid"  # working column for the series id; cannot clash with a CSV header
_MAX_NEW_ROWS = 1_000_000


@dataclass
class LoadedSeries:
    """A validated series (or several, in long format) and how it was obtained."""

    frame: pd.DataFrame  # "date", then id_col if long format, then value_cols (float64)
    source: str  # the path as given; "bundled:processed_data.csv" for the bundled file
    # sha256 of the file's content, after gzip decompression: x.csv and x.csv.gz share one hash,
    # and the bundled file's hash is the one its README publishes for processed_data.csv.
    sha256: str
    time_col: str
    target: str
    value_cols: list[str]  # [target] for S; every numeric column, target last, for M and MS
    id_col: str | None
    freq: str
    tz: str | None
    repairs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def series_ids(self) -> list[str]:
        """The ids of a long-format file in frame order; ``[]`` for a wide single-series file."""
        if not self.id_col:
            return []
        return [str(s) for s in pd.unique(self.frame[self.id_col])]

    def iter_series(self) -> Iterator[tuple[str | None, pd.DataFrame]]:
        """``(id, rows)`` per series; one ``(None, frame)`` for a wide file."""
        if not self.id_col:
            yield None, self.frame
            return
        for sid, rows in self.frame.groupby(self.id_col, sort=False):
            yield str(sid), rows


def load_series(cfg: DataConfig) -> LoadedSeries:
    """Read, validate and repair the file ``cfg.path`` (the bundled series when None).

    Raises:
        ConfigError: an ingestion option is invalid (unknown policy, epoch unit or freq).
        DataError: the file cannot be read as a table at all.
        DataValidationError: the table has problems; all of them are listed.
    """
    freq = _check_options(cfg)
    path, source = _locate(cfg.path)
    content = unpack(read_bytes(path), source)
    table = parse_table(content, source)
    result = _Ingest(cfg, source, table, freq).run()
    result.sha256 = hashlib.sha256(content).hexdigest()
    log.info(
        "%s: %d rows, freq %s, target %s, columns %s, %d repairs",
        source, len(result.frame), result.freq, result.target, result.value_cols,
        len(result.repairs),
    )
    return result


def _locate(path: str | None) -> tuple[Path, str]:
    if path is None:
        return BUNDLED, BUNDLED_SOURCE
    return Path(path).expanduser(), str(path)


def _check_options(cfg: DataConfig) -> str | None:
    """Reject bad ingestion options before reading; return the normalised forced freq."""
    choices = {
        "duplicates": ("error", "last", "mean"),
        "missing": ("error", "interpolate", "ffill"),
        "gaps": ("error", "interpolate", "ffill"),
        "features": ("S", "M", "MS"),
    }
    bad = [
        f"data.{name} must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}"
        for name, allowed in choices.items() if getattr(cfg, name) not in allowed
    ]
    if cfg.epoch_unit is not None and cfg.epoch_unit not in EPOCH_UNITS:
        bad.append(f"data.epoch_unit must be one of s, ms, us, ns; got {cfg.epoch_unit!r}")
    if not isinstance(cfg.max_gap_steps, int) or cfg.max_gap_steps < 0:
        bad.append(f"data.max_gap_steps must be an integer >= 0; got {cfg.max_gap_steps!r}")
    if bad:
        raise ConfigError("invalid data options:\n" + "\n".join(f"  - {b}" for b in bad))
    return normalise_freq(cfg.freq) if cfg.freq else None


@dataclass
class _Columns:
    time: str | None = None
    sid: str | None = None
    target: str | None = None
    values: list[str] = field(default_factory=list)


class _Ingest:
    """One validation-and-repair pass over one table; collects problems instead of raising."""

    def __init__(self, cfg: DataConfig, source: str, table: RawTable, freq: str | None):
        self.cfg, self.source, self.table, self.freq = cfg, source, table, freq
        self.problems: list[str] = []
        self.warnings: list[str] = list(table.warnings)
        self.repairs: list[str] = []
        self.tz: str | None = None
        self.text: dict[str, pd.Series] = {}  # per value column: cells holding non-numbers

    def run(self) -> LoadedSeries:
        cells = self._number_rows(self.table.frame)
        if self.table.long_rows:
            self.problems.append(
                f"{plural(len(self.table.long_rows), 'row')} with more fields than the header's "
                f"{self.table.header_fields} at {fmt_rows(self.table.long_rows)} {ROWS_NOTE}; "
                "remove the extra separators or quote the cells that contain them"
            )
        cols = self._columns(cells)
        if cells.empty:
            self.problems.append(
                f"no data rows: the file has a header ({', '.join(cells.columns)}) but no rows"
            )
        if cols.time is None or cols.target is None or cells.empty:
            self._raise()
        work = self._cells(cells, cols)
        work = self._order(work)
        work = self._duplicates(work, cols)
        freq = self.freq or self._infer_freq(work)
        fills = self._grid(work, cols, freq) if freq else {}
        work = self._missing(work, cols)
        self._content(work, cols)
        self._raise()
        frame = self._fill_gaps(work, cols, fills)
        return LoadedSeries(
            frame=frame, source=self.source, sha256="", time_col=cols.time, target=cols.target,
            value_cols=cols.values, id_col=cols.sid, freq=freq, tz=self.tz,
            repairs=self.repairs, warnings=self.warnings,
        )

    def _raise(self) -> None:
        if self.problems:
            raise DataValidationError(self.source, self.problems)

    # -- columns ---------------------------------------------------------------------------

    def _number_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Index rows by their 1-based data row and drop lines that are entirely blank."""
        frame = frame.copy()
        frame.index = pd.RangeIndex(1, len(frame) + 1)
        blank = self.table.blank_rows
        if blank:
            self.warnings.append(
                f"skipped {plural(len(blank), 'blank line')} at {fmt_rows(blank)} {ROWS_NOTE}"
            )
        return frame.drop(index=blank)

    def _columns(self, cells: pd.DataFrame) -> _Columns:
        names = list(cells.columns)
        cols = _Columns()
        cols.time = self._find(names, self.cfg.time_col, TIME_NAMES, "time_col")
        cols.sid = self._find(names, self.cfg.id_col, ID_NAMES, "id_col", required=False)
        cols.target = self._target(names, cols)
        if cols.target is not None:
            cols.values = self._value_columns(cells, cols)
        return cols

    def _find(
        self, names: list[str], given: str | None, defaults: tuple[str, ...], option: str,
        required: bool = True,
    ) -> str | None:
        if given is not None:
            found = _match(names, given)
            if found is None:
                self.problems.append(
                    f"data.{option} {given!r} is not a column; the columns are: "
                    f"{', '.join(names)}"
                )
            return found
        for candidate in defaults:
            found = _match(names, candidate)
            if found is not None:
                return found
        if required:
            self.problems.append(
                f"no time column: none of {', '.join(defaults)} (any case) among the columns "
                f"{', '.join(names)}; set data.{option}"
            )
        return None

    def _target(self, names: list[str], cols: _Columns) -> str | None:
        target = _match(names, self.cfg.target)
        if target is None and FALLBACK_TARGET in names:
            self.warnings.append(
                f"target {self.cfg.target!r} is not a column; using {FALLBACK_TARGET!r} "
                "(long-format convention)"
            )
            target = FALLBACK_TARGET
        if target is None:
            self.problems.append(
                f"target {self.cfg.target!r} is not a column; the columns are: "
                f"{', '.join(names)}; set data.target to one of them"
            )
        elif target in (cols.time, cols.sid):
            self.problems.append(
                f"target {target!r} is the {'time' if target == cols.time else 'id'} column; "
                "set data.target to a numeric column"
            )
            return None
        return target

    def _value_columns(self, cells: pd.DataFrame, cols: _Columns) -> list[str]:
        if self.cfg.features == "S":
            return [cols.target]
        numeric, dropped = [], []
        for name in cells.columns:
            if name in (cols.time, cols.sid, cols.target):
                continue
            values, text = to_float(cells[name], self.table.decimal)
            present = int((~np.isnan(values)).sum())
            if present and present >= text.sum():
                numeric.append(name)
            else:
                dropped.append(name)
        if dropped:
            self.warnings.append(
                f"features {self.cfg.features}: left out columns that are empty or mostly text: "
                f"{', '.join(dropped)}"
            )
        return numeric + [cols.target]

    # -- cells -----------------------------------------------------------------------------

    def _cells(self, cells: pd.DataFrame, cols: _Columns) -> pd.DataFrame:
        """Parse stamps, ids and values; report unusable cells; keep rows with a stamp and id."""
        rows = cells.index.to_numpy()
        parsed = parse_stamps(cells[cols.time], rows, self.cfg.epoch_unit, cols.time)
        self.problems += parsed.problems
        self.warnings += parsed.notes
        self.tz = parsed.tz
        work = pd.DataFrame({"date": parsed.stamps.to_numpy()}, index=cells.index)
        work[_SID] = self._ids(cells, cols) if cols.sid else ""
        for name in cols.values:
            values, text = to_float(cells[name], self.table.decimal)
            work[name] = values
            self.text[name] = pd.Series(text, index=cells.index)
        for name in cols.values:
            self._cell_problem(work, self.text[name], name,
                               ("cell holds", "cells hold", "text that is not a number"),
                               "correct them, or empty them and set data.missing to fill them")
            self._cell_problem(work, np.isinf(work[name]), name, ("infinite value",),
                               "replace them, or empty them and set data.missing to fill them")
        keep = work["date"].notna() & work[_SID].ne("\x00")
        return work[keep]

    def _ids(self, cells: pd.DataFrame, cols: _Columns) -> pd.Series:
        raw = cells[cols.sid]
        if pd.api.types.is_float_dtype(raw.dtype) and raw.dropna().map(float.is_integer).all():
            raw = raw.astype("Int64")
        ids = raw.astype(str).str.strip()
        empty = raw.isna() | ids.eq("")
        if empty.any():
            self.problems.append(
                f"column {cols.sid}: {int(empty.sum())} empty series ids at "
                f"{fmt_rows(cells.index[empty])} {ROWS_NOTE}; fill them or delete those rows"
            )
        return ids.mask(empty, "\x00")

    def _cell_problem(
        self, work: pd.DataFrame, mask: pd.Series, column: str, what: tuple[str, ...],
        remedy: str,
    ) -> None:
        """One problem per series: ``what`` is (singular, plural[, rest of the phrase])."""
        for sid, rows in work[mask.to_numpy()].groupby(_SID, sort=False):
            first = rows["date"].dropna()
            when = f", first at {fmt_ts(first.iloc[0])}" if len(first) else ""
            noun = what[0] if len(rows) == 1 else (what[1] if len(what) > 1 else what[0] + "s")
            rest = f" {what[2]}" if len(what) > 2 else ""
            self.problems.append(
                f"column {column}{self._series(sid)}: {len(rows)} {noun}{rest} at "
                f"{fmt_rows(rows.index)} {ROWS_NOTE}{when}; {remedy}"
            )

    def _series(self, sid: str) -> str:
        return in_series(sid) if sid not in ("", "\x00") else ""

    # -- order and duplicates ----------------------------------------------------------------

    def _order(self, work: pd.DataFrame) -> pd.DataFrame:
        """Sort by (series, time); count rows that were out of time order within their series."""
        moved = {
            sid: rows_out_of_order(g["date"].to_numpy().astype(np.int64))
            for sid, g in work.groupby(_SID, sort=False)
        }
        total = sum(moved.values())
        if total and self.cfg.sort:
            self.warnings.append(
                f"{total} of {len(work)} rows were out of time order (the fewest rows that must "
                "move to sort the file); they were sorted"
            )
            self.repairs.append(f"sorted rows by time (data.sort=true): {total} rows moved")
        elif total:
            for sid, g in work.groupby(_SID, sort=False):
                if moved[sid]:
                    self.problems.append(self._unsorted(g, sid, moved[sid]))
        return work.sort_values([_SID, "date"], kind="stable")

    def _unsorted(self, g: pd.DataFrame, sid: str, moved: int) -> str:
        stamps = g["date"]
        late = stamps < stamps.cummax().shift(fill_value=stamps.iloc[0])
        first = g.index[late.to_numpy()][0]
        return (
            f"rows are not in time order{self._series(sid)}: {moved} rows out of order, first "
            f"data row {first} {ROWS_NOTE} at {fmt_ts(stamps.loc[first])} comes after a later "
            "stamp; set data.sort=true to sort them"
        )

    def _duplicates(self, work: pd.DataFrame, cols: _Columns) -> pd.DataFrame:
        keys = [_SID, "date"]
        dup = work.duplicated(keys, keep=False)
        if not dup.any():
            return work
        policy = self.cfg.duplicates
        for sid, g in work[dup].groupby(_SID, sort=False):
            listing = "; ".join(
                f"{fmt_ts(ts)} ({fmt_rows(rows.index)})"
                for ts, rows in list(g.groupby("date", sort=False))[:8]
            )
            n = g["date"].nunique()
            count = f"{plural(n, 'timestamp')} {'appears' if n == 1 else 'appear'}"
            if policy == "error":
                hint = "" if cols.sid else (
                    "; if the file holds several series, set data.id_col to their id column"
                )
                self.problems.append(
                    f"{count} more than once{self._series(sid)}: {listing} "
                    f"{ROWS_NOTE}; set data.duplicates to 'last' or 'mean'{hint}"
                )
            else:
                kept = "keeping the last row" if policy == "last" else "averaging their values"
                self.repairs.append(
                    f"resolved {plural(n, 'duplicated timestamp')}{self._series(sid)} by {kept} "
                    f"(data.duplicates={policy!r}): {listing} {ROWS_NOTE}"
                )
        # Under "error" the duplicates are still dropped here so later checks see one row each.
        return merge_duplicates(work, keys, cols.values, "mean" if policy == "mean" else "last")

    # -- frequency and grid ------------------------------------------------------------------

    def _infer_freq(self, work: pd.DataFrame) -> str | None:
        groups = [pd.DatetimeIndex(g["date"]) for _, g in work.groupby(_SID, sort=False)]
        freq, why = infer_step(groups)
        if freq is None:
            self.problems.append(
                f"cannot infer the frequency: {why}; set data.freq (e.g. 'min', '15min', 'h', "
                "'D', 'B') and make the stamps regular"
            )
        return freq

    def _grid(
        self, work: pd.DataFrame, cols: _Columns, freq: str
    ) -> dict[str, pd.DatetimeIndex]:
        """Report off-grid stamps and gaps; return the stamps to insert per series."""
        fills: dict[str, pd.DatetimeIndex] = {}
        budget = _MAX_NEW_ROWS
        for sid, g in work.groupby(_SID, sort=False):
            stamps = pd.DatetimeIndex(g["date"])
            check = check_grid(stamps, freq)
            if check.off_grid.size:
                rows = g.index[check.off_grid]
                self.problems.append(
                    f"{plural(len(rows), 'timestamp')}{self._series(sid)} off the regular {freq} "
                    f"grid (phase set by most stamps): {fmt_rows(rows)} {ROWS_NOTE}, first "
                    f"{fmt_ts(stamps[check.off_grid[0]])}; resample the file to one step, or "
                    "set data.freq to the step it has"
                )
            fillable = [gap for gap in check.gaps if self._fillable(gap.count)]
            for gap in check.gaps:
                if not self._fillable(gap.count):
                    self.problems.append(self._gap_problem(g, sid, gap, freq))
            budget -= sum(gap.count for gap in fillable)
            if fillable and budget >= 0:
                fills[sid] = pd.DatetimeIndex(np.concatenate([
                    pd.date_range(gap.start, periods=gap.count, freq=freq).asi8
                    for gap in fillable
                ]).astype("datetime64[ns]"))
                self.repairs.append(self._gap_repair(sid, fillable, freq, cols))
        if budget < 0:
            # Checked before building the rows: a huge data.max_gap_steps must not exhaust memory.
            self.problems.append(
                f"filling the gaps would add more than {_MAX_NEW_ROWS} rows; lower "
                "data.max_gap_steps or resample the file"
            )
        return fills

    def _fillable(self, count: int) -> bool:
        return self.cfg.gaps != "error" and count <= self.cfg.max_gap_steps

    def _gap_problem(self, g: pd.DataFrame, sid: str, gap: Gap, freq: str) -> str:
        span = (f"at {fmt_ts(gap.start)}" if gap.count == 1
                else f"from {fmt_ts(gap.start)} to {fmt_ts(gap.end)}")
        where = (
            f"gap of {plural(gap.count, f'missing {freq} step')}{self._series(sid)} {span} "
            f"(between data rows {g.index[gap.before]} and {g.index[gap.after]}, "
            f"{ROWS_NOTE[1:-1]})"
        )
        if self.cfg.gaps == "error":
            return (f"{where}; set data.gaps to 'interpolate' or 'ffill' to fill gaps of up to "
                    f"data.max_gap_steps ({self.cfg.max_gap_steps}) steps")
        return (f"{where}: longer than data.max_gap_steps ({self.cfg.max_gap_steps}); fill it in "
                f"the file, or raise data.max_gap_steps to {gap.count} if inventing that much "
                "data is acceptable")

    def _gap_repair(self, sid: str, gaps: list[Gap], freq: str, cols: _Columns) -> str:
        steps = sum(gap.count for gap in gaps)
        listing = "; ".join(
            fmt_ts(gap.start) if gap.count == 1 else
            f"{fmt_ts(gap.start)} to {fmt_ts(gap.end)} ({gap.count} steps)"
            for gap in gaps[:8]
        ) + (f" and {len(gaps) - 8} more gaps" if len(gaps) > 8 else "")
        series = f" of series {sid!r}" if cols.sid else ""
        return (
            f"filled {plural(steps, f'missing {freq} step')} in {', '.join(cols.values)}{series} "
            f"by {POLICY_WORDS[self.cfg.gaps]} "
            f"(data.gaps={self.cfg.gaps!r}, max_gap_steps {self.cfg.max_gap_steps}): {listing}"
        )

    # -- values ------------------------------------------------------------------------------

    def _missing(self, work: pd.DataFrame, cols: _Columns) -> pd.DataFrame:
        policy = self.cfg.missing
        work = work.copy()
        for name in cols.values:
            missing = work[name].isna() & ~self.text[name].reindex(work.index)
            if name == cols.target:
                # A target with no value at all is reported once, as empty, by _content.
                missing &= work[name].notna().groupby(work[_SID]).transform("any")
            if not missing.any():
                continue
            if policy == "error":
                self._cell_problem(work, missing, name, ("missing value (empty cell)",
                                   "missing values (empty cells)"),
                                   "set data.missing to 'interpolate' or 'ffill' to fill them")
                continue
            work[name] = self._fill_column(work, name, missing.to_numpy(), policy)
        return work

    def _fill_column(self, work: pd.DataFrame, name: str, missing: np.ndarray,
                     policy: str) -> pd.Series:
        out = work[name].copy()
        for sid, g in work.groupby(_SID, sort=False):
            mask = missing[work.index.get_indexer(g.index)]
            if not mask.any():
                continue
            filled, left = fill_cells(g[name], pd.DatetimeIndex(g["date"]), mask, policy)
            out.loc[g.index] = filled.to_numpy()
            done = g.index[mask & ~left]
            if len(done):
                span = fmt_ts(g.loc[done[0], "date"])
                if len(done) > 1:
                    span += f" to {fmt_ts(g.loc[done[-1], 'date'])}"
                self.repairs.append(
                    f"filled {plural(len(done), 'missing value')} in column {name}"
                    f"{self._series(sid)} by {POLICY_WORDS[policy]} (data.missing={policy!r}): "
                    f"{fmt_rows(done)} {ROWS_NOTE}, {span}"
                )
            if left.any():
                self._unfillable(g, pd.Series(left, index=g.index), name, policy)
        return out

    def _unfillable(self, g: pd.DataFrame, left: pd.Series, name: str, policy: str) -> None:
        if policy == "ffill":
            edge, remedy = "before the first known value", "delete those rows"
        else:
            edge = "before the first or after the last known value"
            remedy = "delete those rows, or use data.missing='ffill' for a trailing run"
        self._cell_problem(
            g, left, name, ("missing value", "missing values", edge),
            f"data.missing={policy!r} cannot fill them; {remedy}",
        )

    def _content(self, work: pd.DataFrame, cols: _Columns) -> None:
        """An empty or constant target gives a model nothing to learn."""
        for sid, g in work.groupby(_SID, sort=False):
            values = g[cols.target].to_numpy()
            finite = values[np.isfinite(values)]
            if finite.size == 0 and not self.text[cols.target].reindex(g.index).any():
                self.problems.append(
                    f"target {cols.target}{self._series(sid)} has no values ({len(g)} rows, all "
                    "empty); fill the column or set data.target to another column"
                )
            elif len(g) > 1 and finite.size == len(g) and np.all(finite == finite[0]):
                self.problems.append(
                    f"target {cols.target}{self._series(sid)} is constant "
                    f"({float(finite[0])!r} in all {len(g)} rows): nothing to forecast; drop the "
                    "series or set data.target to another column"
                )

    # -- output ------------------------------------------------------------------------------

    def _fill_gaps(
        self, work: pd.DataFrame, cols: _Columns, fills: dict[str, pd.DatetimeIndex]
    ) -> pd.DataFrame:
        parts = []
        for sid, g in work.groupby(_SID, sort=False):
            part = g.set_index("date")[cols.values]
            if sid in fills:
                new = fill_new_rows(part, fills[sid], cols.values, self.cfg.gaps)
                part = pd.concat([part, new]).sort_index()
            part = part.rename_axis("date").reset_index()
            if cols.sid:
                part.insert(1, cols.sid, sid)
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True)
        frame["date"] = frame["date"].astype("datetime64[ns]")
        frame[cols.values] = frame[cols.values].astype(np.float64)
        if cols.sid:
            frame = frame.sort_values([cols.sid, "date"], kind="stable", ignore_index=True)
        return frame


def _match(names: list[str], wanted: str) -> str | None:
    """``wanted`` itself if it is a column, else its only case-insensitive match."""
    if wanted in names:
        return wanted
    folded = [n for n in names if n.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None
