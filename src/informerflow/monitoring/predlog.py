"""The prediction log: every forecast the server answered, kept in one SQLite file.

Three append-only tables, written together in one transaction per batch of requests::

    requests   record_id (server-made, unique), request_id (the client's, if any), served_at,
               model_name, model_version, route
    windows    record_id, series_id, window_end (last input stamp), window_hash (sha256 of the
               last stamp, length and values), n_rows, input_values (JSON: column -> the window)
    forecasts  record_id, series_id, step (1..horizon), target_time, column, value

Times are ISO-8601 text in UTC without an offset, the same convention as the model's training
stamps, so forecasts join with actuals by equality. ``series_id`` is ``""`` for a model of one
series.

Why this shape: a record id made by the server (not the client's request id, which clients may
reuse) plus primary keys over (record, series, column, step) mean a batch written twice cannot
duplicate a forecast, and SQLite's WAL journal lets several server processes append to one file
while ``informerflow monitor`` reads it.

Writing happens on one background thread (:class:`PredictionLogger`). A request waits for its
record to be committed for at most ``max_wait_s``; past that it is answered anyway and the record
is still written when the database frees up. Records are lost only if the database cannot be
written at all, or if the process is killed while its record waited past that bound; each lost
record is counted (``informerflow_prediction_log_failures_total``) and logged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import Counter

from informerflow import state
from informerflow.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FILENAME = "predictions.db"
TIME = "timestamp"

LOG_FAILURES = Counter(
    "informerflow_prediction_log_failures_total",
    "Forecast records that could not be written to the prediction log",
    ["reason"],
)
for _reason in ("write_error", "queue_full", "record_error"):
    LOG_FAILURES.labels(reason=_reason)  # exported as 0 from the start, so rate() works
LOG_LATE = Counter(
    "informerflow_prediction_log_late_total",
    "Requests answered before their record was committed (the write was slower than the bound)",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    record_id TEXT PRIMARY KEY,
    request_id TEXT,
    served_at TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT,
    route TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    record_id TEXT NOT NULL,
    series_id TEXT NOT NULL,
    window_end TEXT NOT NULL,
    window_hash TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    input_values TEXT NOT NULL,
    PRIMARY KEY (record_id, series_id)
);
CREATE TABLE IF NOT EXISTS forecasts (
    record_id TEXT NOT NULL,
    series_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    target_time TEXT NOT NULL,
    column TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (record_id, series_id, column, step)
);
CREATE INDEX IF NOT EXISTS forecasts_by_time ON forecasts (series_id, target_time);
"""


def default_path() -> Path:
    """``predictions.db`` in the state directory."""
    return state.state_dir() / FILENAME


@dataclass
class SeriesForecast:
    """One series of one answered request: the window it saw and the rows it got back."""

    series_id: str
    window_end: str
    window_hash: str
    n_rows: int
    inputs: dict[str, list[float]]
    target_times: list[str]
    values: dict[str, list[float]]  # output column -> one value per step


@dataclass
class ForecastRecord:
    """Everything logged about one answered request."""

    model_name: str
    model_version: str | None
    route: str
    series: list[SeriesForecast]
    request_id: str | None = None
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    served_at: str = field(default_factory=lambda: _utc_text(datetime.now(UTC)))


def make_record(
    model_name: str,
    model_version: str | None,
    route: str,
    request_id: str | None,
    window: pd.DataFrame,
    forecast: pd.DataFrame,
    input_cols: list[str],
    seq_len: int,
    id_col: str | None = None,
) -> ForecastRecord:
    """Build the record of one request from its input frame and the (trimmed) forecast frame."""
    if id_col and id_col in window.columns:
        parts = [
            (str(sid), rows, forecast[forecast[id_col].astype(str) == str(sid)])
            for sid, rows in window.groupby(id_col, sort=False)
        ]
    else:
        parts = [("", window, forecast)]
    series = []
    for sid, rows, out in parts:
        tail = rows.iloc[len(rows) - seq_len:]
        # The forecaster accepted the window, so its stamps are consecutive at the model's
        # frequency: the last stamp and the length pin all of them down. Parsing one stamp
        # instead of all keeps the record cheap (it is built for every request).
        end = _utc_text(pd.Timestamp(tail[TIME].iloc[-1]))
        inputs = {c: tail[c].astype(float).tolist() for c in input_cols}
        outputs = [c for c in out.columns if c not in (TIME, id_col)]
        series.append(SeriesForecast(
            series_id=sid,
            window_end=end,
            window_hash=window_hash(end, len(tail), inputs),
            n_rows=len(tail),
            inputs=inputs,
            target_times=[_utc_text(t) for t in out[TIME]],
            values={c: out[c].astype(float).tolist() for c in outputs},
        ))
    return ForecastRecord(model_name, model_version, route, series, request_id)


def window_hash(end: str, n_rows: int, inputs: dict[str, list[float]]) -> str:
    """sha256 identifying a window: its last stamp and length, then each column's values.

    Layout: ``end`` (UTC ISO text) in UTF-8, a newline, ``n_rows`` as little-endian int64, then
    for every column in name order its UTF-8 name, a NUL byte and its values as little-endian
    float64. The separators keep two different windows from ever feeding the same bytes.
    """
    digest = hashlib.sha256(end.encode() + b"\n" + np.int64(n_rows).astype("<i8").tobytes())
    for name in sorted(inputs):
        digest.update(name.encode() + b"\0")
        digest.update(np.asarray(inputs[name], dtype="<f8").tobytes())
    return digest.hexdigest()


# -- the store -----------------------------------------------------------------------------------


class PredictionLog:
    """The SQLite file: append records, read them back as frames."""

    def __init__(self, path: str | Path | None = None, busy_timeout_ms: int = 10_000):
        self.path = Path(path) if path else default_path()
        self._busy_timeout_ms = busy_timeout_ms

    def connect(self) -> sqlite3.Connection:
        """A connection with the schema in place (created on first use)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            self._enable_wal(conn)
            # NORMAL in WAL mode: a commit survives the process being killed; only an OS crash
            # or power loss can drop the last transactions, which FULL guards at twice the cost.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, waiting out another writer's lock.

        Changing the journal mode of a file still in rollback mode fails at once with "database
        is locked" while another connection writes, ignoring the busy timeout, so it is retried
        here for as long as that timeout allows.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    def write(conn: sqlite3.Connection, records: Iterable[ForecastRecord]) -> int:
        """Insert ``records`` in one transaction; returns the number of new requests stored."""
        new = 0
        with conn:  # one transaction: a batch is stored whole or not at all
            for r in records:
                new += conn.execute(
                    "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?)",
                    (r.record_id, r.request_id, r.served_at, r.model_name, r.model_version,
                     r.route),
                ).rowcount
                for s in r.series:
                    conn.execute(
                        "INSERT OR IGNORE INTO windows VALUES (?, ?, ?, ?, ?, ?)",
                        (r.record_id, s.series_id, s.window_end, s.window_hash, s.n_rows,
                         json.dumps(s.inputs)),
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO forecasts VALUES (?, ?, ?, ?, ?, ?)",
                        [(r.record_id, s.series_id, step, t, col, float(vals[step - 1]))
                         for col, vals in s.values.items()
                         for step, t in enumerate(s.target_times, start=1)],
                    )
        return new

    def append(self, records: Iterable[ForecastRecord]) -> None:
        """Write ``records`` synchronously (tests and tools; the server uses the logger)."""
        conn = self.connect()
        try:
            self.write(conn, records)
        finally:
            conn.close()

    def read(self, model_name: str | None = None, since: str | None = None) -> LoggedForecasts:
        """Every logged forecast (optionally of one model, served at or after ``since``).

        Raises:
            DataError: the file is missing, a directory, or not a prediction log.
        """
        if not self.path.exists():
            raise DataError(f"no prediction log at {self.path}: serve requests first (the "
                            "server writes it) or point --prediction-log at the file")
        if not self.path.is_file():
            raise DataError(f"{self.path} is a directory, not a prediction log")
        try:
            return self._read(model_name, since)
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            raise DataError(f"{self.path} is not an informerflow prediction log (SQLite with "
                            f"tables requests, windows, forecasts): {exc}") from None

    def _read(self, model_name: str | None, since: str | None) -> LoggedForecasts:
        where, args = ["1 = 1"], []
        if model_name:
            where.append("r.model_name = ?")
            args.append(model_name)
        if since:
            where.append("r.served_at >= ?")
            args.append(_since(since))
        clause = " AND ".join(where)
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            forecasts = pd.read_sql_query(
                "SELECT r.record_id, r.request_id, r.served_at, r.model_name, r.model_version, "
                "f.series_id, f.step, f.target_time, f.column, f.value "
                f"FROM forecasts f JOIN requests r USING (record_id) WHERE {clause}",
                conn, params=args,
            )
            windows = pd.read_sql_query(
                "SELECT r.record_id, r.served_at, r.model_name, r.model_version, w.series_id, "
                "w.window_end, w.window_hash, w.n_rows, w.input_values "
                f"FROM windows w JOIN requests r USING (record_id) WHERE {clause}",
                conn, params=args,
            )
        finally:
            conn.close()
        for frame, col in ((forecasts, "target_time"), (forecasts, "served_at"),
                           (windows, "window_end"), (windows, "served_at")):
            frame[col] = pd.to_datetime(frame[col], format="ISO8601")
        for frame in (forecasts, windows):
            frame["model_version"] = frame["model_version"].fillna("")
        return LoggedForecasts(forecasts, windows)


@dataclass
class LoggedForecasts:
    """What :meth:`PredictionLog.read` returns: one row per forecast value, one per window."""

    forecasts: pd.DataFrame
    windows: pd.DataFrame

    def observed(self, column: str, freq: str) -> pd.DataFrame:
        """The input values the model saw, one row per (version, series, stamp).

        Windows overlap, so each stamp's value is kept once; a stamp sent with different values
        in different windows (a corrected measurement) keeps its most recent one.
        """
        rows = []
        for w in self.windows.itertuples(index=False):
            values = json.loads(w.input_values).get(column)
            if values is None:
                continue
            stamps = pd.date_range(end=w.window_end, periods=len(values), freq=freq)
            rows.append(pd.DataFrame({"model_version": w.model_version,
                                      "series_id": w.series_id, "time": stamps,
                                      "served_at": w.served_at, "value": values}))
        if not rows:
            return pd.DataFrame(columns=["model_version", "series_id", "time", "value"])
        frame = pd.concat(rows, ignore_index=True).sort_values("served_at", kind="stable")
        frame = frame.drop_duplicates(["model_version", "series_id", "time"], keep="last")
        return frame.drop(columns="served_at").sort_values(
            ["model_version", "series_id", "time"]).reset_index(drop=True)


# -- the server's writer -------------------------------------------------------------------------


class PredictionLogger:
    """Appends records from the event loop on one writer thread, batching what queues up.

    ``await logger.log(record)`` returns once the record is committed, or after ``max_wait_s``
    when the write is slower; it never raises. ``close()`` writes what is still queued.
    """

    def __init__(self, store: PredictionLog, max_wait_s: float = 0.25, max_queue: int = 10_000,
                 max_batch: int = 256):
        self.store = store
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[ForecastRecord, concurrent.futures.Future] | None] = (
            queue.Queue(max_queue))
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    async def log(self, record: ForecastRecord) -> bool:
        """Queue ``record`` and wait (bounded) for its commit; True when it is committed."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((record, done))
        except queue.Full:
            self._lost(1, "queue_full", "the write queue is full")
            return False
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(done)), self.max_wait_s)
        except TimeoutError:
            LOG_LATE.inc()
            return False
        except Exception:  # already counted and logged by the writer
            return False
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write every queued record, then stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("prediction log writer did not finish within %.0fs; queued records may "
                      "be lost", timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < self.max_batch and item is not None:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            pending = [entry for entry in batch if entry is not None]
            if pending:
                self._write(pending)
            if batch[-1] is None:
                if self._conn is not None:
                    self._conn.close()
                return

    def _write(self, pending: list[tuple[ForecastRecord, concurrent.futures.Future]]) -> None:
        try:
            if self._conn is None:
                self._conn = self.store.connect()
            self.store.write(self._conn, [record for record, _ in pending])
        except Exception as exc:  # whatever it is, the writer thread must live on
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # reconnect next time: the file may come back
            self._lost(len(pending), "write_error", f"{type(exc).__name__}: {exc}")
            for _, done in pending:
                done.set_exception(exc)
            return
        for _, done in pending:
            done.set_result(True)

    def _lost(self, count: int, reason: str, why: str) -> None:
        LOG_FAILURES.labels(reason=reason).inc(count)
        log.warning("prediction log %s: %d record(s) not written (%s)", self.store.path, count,
                    why)


def _since(value: str) -> str:
    """``value`` as the log writes times (UTC, no offset), so text comparison orders them."""
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise ConfigError(f"--since {value!r} is not a time; use ISO 8601 such as "
                          "2026-12-01T00:00:00 (UTC unless it carries an offset)") from exc
    if stamp is pd.NaT:
        raise ConfigError(f"--since {value!r} is not a time")
    return _utc_text(stamp)


def _utc_text(stamp: datetime | pd.Timestamp) -> str:
    stamp = pd.Timestamp(stamp)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.isoformat()
