"""The server's prediction-log writer when the database is slow: bounded wait, nothing lost.

A second connection holds SQLite's write lock (``BEGIN EXCLUSIVE``), as a monitor job or another
server process might for a while. Requests must not wait for it past the bound, and their records
must still be written once the lock is gone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pandas as pd

from informerflow.monitoring import predlog


def _record(i: int) -> predlog.ForecastRecord:
    window = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=4, freq="min").map(pd.Timestamp.isoformat),
        "cpu": [1.0, 2.0, 3.0, float(i)],
    })
    forecast = pd.DataFrame({"timestamp": pd.date_range("2024-01-01 00:04", periods=2,
                                                        freq="min"),
                             "cpu": [5.0, 6.0 + i]})
    return predlog.make_record("m", "1", "v2", f"req-{i}", window, forecast, ["cpu"], seq_len=4)


def test_a_locked_log_delays_no_request_past_the_bound_and_loses_nothing(tmp_path: Path) -> None:
    store = predlog.PredictionLog(tmp_path / "p.db")
    store.connect().close()  # schema in place
    late_before = predlog.LOG_LATE._value.get()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    logger = predlog.PredictionLogger(store, max_wait_s=0.05)

    async def answer_all() -> list[bool]:
        return await asyncio.gather(*(logger.log(_record(i)) for i in range(5)))

    committed = asyncio.run(answer_all())
    assert committed == [False] * 5  # answered without waiting for the lock
    assert predlog.LOG_LATE._value.get() - late_before == 5
    blocker.execute("ROLLBACK")
    blocker.close()
    logger.close()

    with sqlite3.connect(store.path) as conn:
        ids = sorted(r[0] for r in conn.execute("SELECT request_id FROM requests"))
        values = conn.execute(
            "SELECT value FROM forecasts f JOIN requests r USING (record_id) "
            "WHERE r.request_id = 'req-3' ORDER BY step").fetchall()
    assert ids == [f"req-{i}" for i in range(5)]
    assert values == [(5.0,), (9.0,)]


def test_a_record_is_committed_before_log_returns_true(tmp_path: Path) -> None:
    store = predlog.PredictionLog(tmp_path / "p.db")
    logger = predlog.PredictionLogger(store, max_wait_s=30)
    try:
        assert asyncio.run(logger.log(_record(7))) is True
        with sqlite3.connect(store.path) as conn:  # a separate connection sees it at once
            (count,) = conn.execute("SELECT COUNT(*) FROM forecasts").fetchone()
        assert count == 2
    finally:
        logger.close()
