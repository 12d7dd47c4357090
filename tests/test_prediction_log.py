"""The prediction log under concurrency, restarts and failure (issue 7).

Servers are real processes on 127.0.0.1 serving a tiny untrained Informer (seq_len 16, pred_len 4,
one column ``cpu`` at 5-minute steps) from a local MLflow model directory. The log is read back
with plain sqlite3 and window hashes are recomputed here with struct and hashlib, so these checks
do not trust the code they check. Every request carries a unique V2 ``id``: the log's
``request_id`` column is how an answer is matched with its record.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import itertools
import json
import math
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from informerflow.monitoring.predlog import (
    ForecastRecord,
    PredictionLog,
    PredictionLogger,
    SeriesForecast,
    make_record,
)
from informerflow.serving.endpoints import (
    endpoint_logs,
    list_endpoints,
    start_endpoint,
    stop_endpoint,
)

SEQ_LEN, PRED_LEN, N_ROWS = 16, 4, 20  # requests send 20 rows; only the last 16 are the window
STEP = timedelta(minutes=5)
START = datetime(2024, 1, 1)
EPOCH = datetime(1970, 1, 1)
FAILURES = "informerflow_prediction_log_failures_total"
LATE = "informerflow_prediction_log_late_total"
TESTS_DIR = Path(__file__).resolve().parent
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


def lost(metrics: dict) -> dict[str, float]:
    """The non-zero prediction-log failure counts by reason (every reason is exported from 0)."""
    return {dict(labels)["reason"]: value for (name, labels), value in metrics.items()
            if name == FAILURES and value}


# -- the model and the servers -------------------------------------------------------------------


@dataclass
class TinyModel:
    dir: Path
    forecaster: Any  # informerflow.forecaster.Forecaster, imported late (torch)


def build_model(path: Path) -> TinyModel:
    """Save a tiny forecaster as an MLflow pyfunc model directory, as log_forecaster logs it."""
    import mlflow

    from informerflow.pyfunc import ARTIFACT, ENTRY, PACKAGE_DIR, PIP_REQUIREMENTS
    from test_serving import SEQ_LEN as SERVING_SEQ_LEN
    from test_serving import build_forecaster  # the same tiny model the serving tests use

    assert SERVING_SEQ_LEN == SEQ_LEN
    forecaster = build_forecaster()
    saved = forecaster.save(path / "forecaster")
    mlflow.pyfunc.save_model(
        str(path / "model"), python_model=str(ENTRY), artifacts={ARTIFACT: str(saved)},
        code_paths=[str(PACKAGE_DIR)], pip_requirements=PIP_REQUIREMENTS)
    return TinyModel(path / "model", forecaster)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh state dir (the servers inherit it); every endpoint left running is stopped."""
    monkeypatch.setenv("INFORMERFLOW_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"
    for endpoint in list_endpoints():
        stop_endpoint(endpoint.name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.05)


# -- a client ------------------------------------------------------------------------------------


def window(i: int) -> tuple[list[str], list[float]]:
    """Request ``i``'s rows: stamps starting ``i`` steps after START, values unique to ``i``."""
    first = START + i * STEP
    stamps = [(first + k * STEP).isoformat() for k in range(N_ROWS)]
    values = [round(50 + 10 * math.sin((i + k) / 5) + i / 1000, 6) for k in range(N_ROWS)]
    return stamps, values


def v2_body(request_id: str, i: int, horizon: int | None = None) -> dict:
    stamps, values = window(i)
    body: dict = {"id": request_id, "inputs": [
        {"name": "timestamp", "datatype": "BYTES", "shape": [N_ROWS], "data": stamps},
        {"name": "cpu", "datatype": "FP64", "shape": [N_ROWS], "data": values},
    ]}
    if horizon is not None:
        body["parameters"] = {"horizon": horizon}
    return body


def infer(url: str, model_name: str, request_id: str, i: int, horizon: int | None = None) -> dict:
    """POST request ``i`` to the V2 route; the parsed answer (raises on any failure)."""
    request = urllib.request.Request(
        f"{url}/v2/models/{model_name}/infer",
        data=json.dumps(v2_body(request_id, i, horizon)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with _OPENER.open(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def outputs(answer: dict) -> dict[str, list]:
    return {out["name"]: out["data"] for out in answer["outputs"]}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` as {(name, sorted labels): value}."""
    with _OPENER.open(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Stream:
    """Client threads sending uniquely numbered V2 requests until :meth:`stop`.

    Each outcome is kept: the answer of a 200, the id of a request that failed to connect or
    lost its connection, and anything else (an HTTP error status, a timeout) as unexpected.
    """

    def __init__(self, url: str, model_name: str, tag: str, threads: int = 4):
        self.url, self.model_name, self.tag = url, model_name, tag
        self.answered: dict[str, dict] = {}
        self.disconnected: list[str] = []
        self.unexpected: list[str] = []
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                i = next(self._numbers)
            request_id = f"{self.tag}-{i:05d}"
            try:
                answer = infer(self.url, self.model_name, request_id, i)
            except urllib.error.HTTPError as exc:  # before URLError: it is one
                self.unexpected.append(f"{request_id}: HTTP {exc.code} {exc.read()[:200]!r}")
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
                self.disconnected.append(request_id)
                time.sleep(0.05)  # the server is down: do not spin
            except Exception as exc:  # recorded; the test asserts there is none
                self.unexpected.append(f"{request_id}: {type(exc).__name__}: {exc}")
            else:
                self.answered[request_id] = answer

    def wait_for(self, n: int, timeout: float = 60) -> None:
        wait_until(lambda: len(self.answered) >= n, timeout, f"{n} answered requests")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


# -- reading the log independently ---------------------------------------------------------------


def logged(path: Path) -> dict[str, list[dict]]:
    """Every row of the three tables, read with plain sqlite3."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return {table: [dict(row) for row in conn.execute(f"SELECT * FROM {table}")]
                for table in ("requests", "windows", "forecasts")}
    finally:
        conn.close()


def count_requests(path: Path) -> int:
    if not path.is_file():
        return 0
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


class WriteLock:
    """Another writer holding the log's write lock, as a busy peer process would.

    While it is held the server's writes wait (SQLite's busy timeout), so requests are answered
    only after --log-wait-ms, before their record is committed.
    """

    def __init__(self, path: Path):
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False)
        self._guard = threading.Lock()
        self._conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.execute("ROLLBACK")
                self._conn.close()
                self._conn = None


def late(url: str) -> float:
    """Requests the server answered before their record was committed."""
    return scrape(url).get((LATE, ()), 0.0)


def assert_logged_once(path: Path, answers: dict[str, dict]) -> dict[str, list[dict]]:
    """No request id twice; each answer once, its forecast rows equal to what the client got."""
    tables = logged(path)
    counts = Counter(row["request_id"] for row in tables["requests"])
    assert [rid for rid, n in counts.items() if n > 1] == []
    missing = sorted(set(answers) - set(counts))
    assert missing == [], f"{len(missing)} answered request(s) missing from the log"
    record_of = {row["request_id"]: row["record_id"] for row in tables["requests"]}
    rows_of: dict[str, list[dict]] = defaultdict(list)
    for row in tables["forecasts"]:
        rows_of[row["record_id"]].append(row)
    for request_id, answer in answers.items():
        got = outputs(answer)
        rows = sorted(rows_of[record_of[request_id]], key=lambda row: row["step"])
        assert [(r["series_id"], r["step"], r["target_time"], r["column"], r["value"])
                for r in rows] == [
            ("", step, stamp, "cpu", value)
            for step, (stamp, value) in enumerate(zip(got["timestamp"], got["cpu"], strict=True),
                                                  start=1)
        ], request_id
    return tables


def expected_hash(stamps: list[str], values: dict[str, list[float]]) -> str:
    """The window hash as documented: last UTC stamp, newline, int64 length, then per sorted
    column its name, NUL and float64 values. Computed with struct (not numpy)."""
    digest = hashlib.sha256(stamps[-1].encode("utf-8") + b"\n" + struct.pack("<q", len(stamps)))
    for name in sorted(values):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(struct.pack(f"<{len(values[name])}d", *values[name]))
    return digest.hexdigest()


# -- 1. many requests at once --------------------------------------------------------------------


def test_concurrent_requests_are_each_logged_exactly_once(model: TinyModel, home: Path) -> None:
    ep = start_endpoint("burst", str(model.dir), free_port())  # the log's default place
    n = 200
    horizons = {i: (2 if i % 25 == 0 else None) for i in range(n)}  # a few trimmed answers too
    ids = [f"burst-{i:03d}" for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        answers = dict(zip(ids, pool.map(
            lambda i: infer(ep.url, ep.model_name, ids[i], i, horizons[i]), range(n)), strict=True))
    assert [answers[rid]["id"] for rid in ids] == ids

    path = home / "predictions.db"
    # Only a request whose write took longer than --log-wait-ms may be answered before its
    # commit (it is counted as late); it lands just after.
    assert count_requests(path) >= n - late(ep.url)
    wait_until(lambda: count_requests(path) >= n, 20, f"{n} records in {path}")
    tables = assert_logged_once(path, answers)

    assert len(tables["requests"]) == n
    assert {(r["model_name"], r["model_version"], r["route"]) for r in tables["requests"]} == {
        (ep.model_name, None, "v2")}
    per_record = Counter(row["record_id"] for row in tables["forecasts"])
    record_of = {row["request_id"]: row["record_id"] for row in tables["requests"]}
    assert [per_record[record_of[rid]] for rid in ids] == [
        2 if horizons[i] else PRED_LEN for i in range(n)]

    windows = {row["record_id"]: row for row in tables["windows"]}
    assert len(tables["windows"]) == n
    for i in (0, 1, 137, 199):
        stamps, values = window(i)
        row = windows[record_of[ids[i]]]
        tail = {"cpu": values[-SEQ_LEN:]}
        assert (row["series_id"], row["n_rows"], row["window_end"]) == ("", SEQ_LEN, stamps[-1])
        assert row["window_hash"] == expected_hash(stamps[-SEQ_LEN:], tail)
        assert json.loads(row["input_values"]) == tail
    assert len({row["window_hash"] for row in tables["windows"]}) == n

    metrics = scrape(ep.url)
    assert lost(metrics) == {}
    assert metrics[FAILURES, (("reason", "write_error"),)] == 0.0  # exported before any loss


# -- 2. restarts ---------------------------------------------------------------------------------


def test_restart_loses_no_answered_request(model: TinyModel, home: Path, tmp_path: Path) -> None:
    path, port = tmp_path / "restart.db", free_port()
    ep = start_endpoint("restart", str(model.dir), port, prediction_log=str(path))
    stream = Stream(ep.url, ep.model_name, "restart")
    try:
        stream.wait_for(15)
        # An answer sent before its commit is still written at the stop (the next test).
        stop_endpoint("restart")  # SIGTERM while the clients keep sending
        before = len(stream.answered)
        start_endpoint("restart", str(model.dir), port, prediction_log=str(path))
        stream.wait_for(before + 15)
    finally:
        stream.stop()
    stop_endpoint("restart")

    assert stream.unexpected == []
    assert stream.disconnected, "no request hit the downtime: the restart was not mid-stream"
    tables = assert_logged_once(path, stream.answered)
    sent = set(stream.answered) | set(stream.disconnected)
    assert {row["request_id"] for row in tables["requests"]} <= sent


def test_records_answered_before_their_commit_are_written_at_a_graceful_stop(
    model: TinyModel, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "late.db"
    ep = start_endpoint("late", str(model.dir), free_port(), prediction_log=str(path))
    answers = {f"late-{i}": infer(ep.url, ep.model_name, f"late-{i}", i) for i in range(2)}
    lock = WriteLock(path)  # writes now wait: each answer leaves after --log-wait-ms, uncommitted
    release = threading.Timer(3.0, lock.release)
    try:
        with ThreadPoolExecutor(6) as pool:
            answers |= dict(zip((f"late-{i}" for i in range(2, 8)), pool.map(
                lambda i: infer(ep.url, ep.model_name, f"late-{i}", i), range(2, 8)),
                strict=True))
        assert late(ep.url) == 6
        release.start()  # frees the file while the stopping server waits to write
        stop_endpoint("late")
    finally:
        release.cancel()
        lock.release()
    assert_logged_once(path, answers)


def test_sigkill_mid_stream_loses_no_answered_request(
    model: TinyModel, home: Path, tmp_path: Path
) -> None:
    path, port = tmp_path / "killed.db", free_port()
    # With the default --log-wait-ms (250) a request is answered anyway when its write is that
    # slow, and a SIGKILL then loses the record by design (counted as late, not as a failure).
    # A bound no write here reaches makes "answered => committed" strict, so the test can't flake.
    server_log = tmp_path / "killed.log"
    with open(server_log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "informerflow.serving", "--model-uri", str(model.dir),
             "--port", str(port), "--prediction-log", str(path), "--log-wait-ms", "10000"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    stream = lock = None
    try:
        wait_until(lambda: _ready(url, process), 120, f"server ready ({server_log})")
        stream = Stream(url, "informer", "killed")
        stream.wait_for(10)
        # Writes are held up when the kill comes: a server that answered before committing
        # would lose those answers' records here.
        lock = WriteLock(path)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)  # reap it
        lock.release()
        before = len(stream.answered)
        start_endpoint("after-kill", str(model.dir), port, prediction_log=str(path))
        stream.wait_for(before + 10)
    finally:
        if stream is not None:
            stream.stop()
        if lock is not None:
            lock.release()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    stop_endpoint("after-kill")

    assert process.returncode == -signal.SIGKILL
    assert stream.unexpected == []
    assert stream.disconnected, "no request hit the downtime: the kill was not mid-stream"
    tables = assert_logged_once(path, stream.answered)
    # A request killed between commit and answer may be logged without an answer; once at most.
    sent = set(stream.answered) | set(stream.disconnected)
    assert {row["request_id"] for row in tables["requests"]} <= sent


def _ready(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        pytest.fail(f"the server exited with {process.returncode} before it was ready")
    try:
        with _OPENER.open(f"{url}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# -- 3. and 4. no log ----------------------------------------------------------------------------


def test_unwritable_log_costs_no_answer_and_counts_each_loss(
    model: TinyModel, home: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    path = blocker / "predictions.db"  # SQLite cannot create this, not even as root
    ep = start_endpoint("nolog", str(model.dir), free_port(), prediction_log=str(path))

    answers = [infer(ep.url, ep.model_name, f"nolog-{i}", i) for i in range(3)]
    with ThreadPoolExecutor(4) as pool:
        answers += pool.map(lambda i: infer(ep.url, ep.model_name, f"nolog-{i}", i), range(3, 9))

    for i, answer in enumerate(answers):
        stamps, values = window(i)
        expected = model.forecaster.forecast(pd.DataFrame({"timestamp": stamps, "cpu": values}))
        got = outputs(answer)
        assert got["timestamp"] == [t.isoformat() for t in expected["timestamp"]]
        np.testing.assert_allclose(got["cpu"], expected["cpu"], rtol=1e-6)
    metrics = scrape(ep.url)
    assert metrics[FAILURES, (("reason", "write_error"),)] == len(answers) == 9
    assert lost(metrics) == {"write_error": 9.0}
    assert blocker.read_text() == "not a directory\n"
    assert "record(s) not written (FileExistsError" in endpoint_logs("nolog", lines=200)


def test_prediction_log_off_writes_no_file(
    model: TinyModel, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the server's working dir: a file named "off" would land here
    ep = start_endpoint("off", str(model.dir), free_port(), prediction_log="off")
    answers = [infer(ep.url, ep.model_name, f"off-{i}", i) for i in range(3)]
    assert [len(outputs(a)["cpu"]) for a in answers] == [PRED_LEN] * 3
    assert lost(scrape(ep.url)) == {}
    stop_endpoint("off")

    names = {p.name for p in tmp_path.rglob("*")}
    assert not names & {"off", "predictions.db", "predictions.db-wal"}


# -- 5. the store and the writer, in-process -----------------------------------------------------


def single_record(request_id: str | None = "one") -> ForecastRecord:
    """make_record over request 0's window and a hand-made 4-step forecast."""
    stamps, values = window(0)
    frame = pd.DataFrame({"timestamp": stamps, "cpu": values})
    future = [(START + (N_ROWS + k) * STEP).isoformat() for k in range(PRED_LEN)]
    forecast = pd.DataFrame({"timestamp": future, "cpu": [1.5, 2.5, 3.5, 4.5]})
    return make_record("tiny", "3", "v1", request_id, frame, forecast, ["cpu"], SEQ_LEN)


def table_sizes(path: Path) -> tuple[int, int, int]:
    tables = logged(path)
    return len(tables["requests"]), len(tables["windows"]), len(tables["forecasts"])


def test_writing_the_same_records_again_adds_nothing(tmp_path: Path) -> None:
    store = PredictionLog(tmp_path / "p.db")
    first, second = single_record("a"), single_record("b")
    conn = store.connect()
    try:
        store.write(conn, [first, second, first])  # a duplicate inside one batch, too
        assert table_sizes(store.path) == (2, 2, 8)
        assert store.write(conn, [first, second]) == 0
    finally:
        conn.close()
    store.append([second])
    assert table_sizes(store.path) == (2, 2, 8)
    rows = [(r["step"], r["target_time"], r["value"]) for r in logged(store.path)["forecasts"]
            if r["record_id"] == first.record_id]
    assert rows == [(1, "2024-01-01T01:40:00", 1.5), (2, "2024-01-01T01:45:00", 2.5),
                    (3, "2024-01-01T01:50:00", 3.5), (4, "2024-01-01T01:55:00", 4.5)]


def test_write_returns_the_number_of_new_requests(tmp_path: Path) -> None:
    store = PredictionLog(tmp_path / "p.db")
    conn = store.connect()
    try:
        assert store.write(conn, [single_record("a")]) == 1
    finally:
        conn.close()


def test_a_fresh_log_locked_for_a_moment_waits_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a peer creating the same file holds its lock for 1 s
    release = threading.Timer(1.0, other.execute, ["COMMIT"])
    release.start()
    logger = PredictionLogger(PredictionLog(path), max_wait_s=30)
    try:
        committed = asyncio.run(logger.log(single_record("waits")))
    finally:
        logger.close()
        release.join()
        other.close()
    assert committed
    assert count_requests(path) == 1


def numbered_records(tag: str, n: int) -> list[ForecastRecord]:
    """``n`` one-step records with request ids ``tag-0`` ... (small: the locking is the point)."""
    return [ForecastRecord(
        "m", "1", "v2",
        [SeriesForecast("", "2024-01-01T00:00:00", "h", 1, {"cpu": [float(k)]},
                        ["2024-01-01T00:05:00"], {"cpu": [float(k)]})],
        request_id=f"{tag}-{k}") for k in range(n)]


def append_numbered(path: str, tag: str, n: int, go: Callable[[], bool]) -> int:
    """Log ``n`` records through a PredictionLogger, one commit each; how many were committed."""
    logger = PredictionLogger(PredictionLog(path), max_wait_s=60, max_batch=1)
    records = numbered_records(tag, n)
    while not go():
        time.sleep(0.005)

    async def log_all() -> list[bool]:
        return await asyncio.gather(*(logger.log(r) for r in records))

    try:
        return sum(asyncio.run(log_all()))
    finally:
        logger.close()


_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_prediction_log import append_numbered
go = Path(sys.argv[5])
print("ready", flush=True)
print(append_numbered(sys.argv[2], sys.argv[3], int(sys.argv[4]), go.exists), flush=True)
"""


def test_two_loggers_in_two_threads_lose_nothing(tmp_path: Path) -> None:
    path, n = str(tmp_path / "shared.db"), 150
    # Created first, so this test is about appending; creating a file under another writer's
    # lock is test_a_fresh_log_locked_for_a_moment_waits_for_the_lock.
    PredictionLog(path).connect().close()
    go = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(append_numbered, path, tag, n, go.is_set) for tag in ("x", "y")]
        go.set()
        assert [d.result(timeout=120) for d in done] == [n, n]
    assert_numbered_once(Path(path), {"x": n, "y": n})


def test_two_processes_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    path, n, go = tmp_path / "shared.db", 150, tmp_path / "go"
    PredictionLog(path).connect().close()  # see the thread variant
    children = [subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(TESTS_DIR), str(path), tag, str(n), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("p", "q")]
    try:
        assert [c.stdout.readline() for c in children] == ["ready\n"] * 2
        go.touch()  # both are set up: now they write at the same time
        results = [c.communicate(timeout=120) for c in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [(c.returncode, out) for c, (out, _) in zip(children, results, strict=True)] == [
        (0, f"{n}\n"), (0, f"{n}\n")], [err[-2000:] for _, err in results]
    assert_numbered_once(path, {"p": n, "q": n})


def assert_numbered_once(path: Path, expected: dict[str, int]) -> None:
    tables = logged(path)
    ids = sorted(row["request_id"] for row in tables["requests"])
    assert ids == sorted(f"{tag}-{k}" for tag, n in expected.items() for k in range(n))
    assert len(tables["forecasts"]) == len(tables["windows"]) == len(ids)


def hand_made(
    version: str, served_at: str, series: dict[str, tuple[str, list[float]]]
) -> ForecastRecord:
    """A record whose windows are given as {series: (window_end, cpu values)}."""
    return ForecastRecord(
        "tiny", version, "v2",
        [SeriesForecast(sid, end, f"hash-{sid}-{end}", len(vals), {"cpu": vals}, [], {"cpu": []})
         for sid, (end, vals) in series.items()],
        served_at=served_at)


def test_observed_keeps_each_stamp_once_with_its_latest_value(tmp_path: Path) -> None:
    store = PredictionLog(tmp_path / "p.db")
    store.append([
        # Written first but served last: its 00:10 value (a correction) must win.
        hand_made("1", "2024-01-01T01:05:00", {"a": ("2024-01-01T00:15:00", [2.0, 3.5, 4.0])}),
        hand_made("1", "2024-01-01T01:00:00", {"a": ("2024-01-01T00:10:00", [1.0, 2.0, 3.0]),
                                               "b": ("2024-01-01T00:10:00", [7.0, 8.0, 9.0])}),
        hand_made("2", "2024-01-01T00:59:00", {"a": ("2024-01-01T00:10:00", [5.0, 5.0, 5.0])}),
    ])
    observed = store.read().observed("cpu", "5min")

    def at(minute: int) -> pd.Timestamp:
        return pd.Timestamp(2024, 1, 1, 0, minute)

    assert list(observed.columns) == ["model_version", "series_id", "time", "value"]
    assert list(observed.itertuples(index=False, name=None)) == [
        ("1", "a", at(0), 1.0), ("1", "a", at(5), 2.0), ("1", "a", at(10), 3.5),
        ("1", "a", at(15), 4.0),
        ("1", "b", at(0), 7.0), ("1", "b", at(5), 8.0), ("1", "b", at(10), 9.0),
        ("2", "a", at(0), 5.0), ("2", "a", at(5), 5.0), ("2", "a", at(10), 5.0),
    ]
    assert store.read().observed("mem", "5min").empty


def test_make_record_splits_a_long_format_window_per_series() -> None:
    # Interleaved rows, series "b" first, stamps at +01:00: the record keeps first-seen order
    # and stores UTC stamps without an offset.
    local = [datetime(2024, 1, 1, 1, 0) + k * STEP for k in range(18)]
    rows = [(pod, f"{t.isoformat()}+01:00", base + k) for k, t in enumerate(local)
            for pod, base in (("b", 100.0), ("a", 0.0))]
    frame = pd.DataFrame(rows, columns=["pod", "timestamp", "cpu"])
    future = [f"{(local[-1] + k * STEP).isoformat()}+01:00" for k in (1, 2)]
    forecast = pd.DataFrame({"pod": ["b", "b", "a", "a"], "timestamp": future * 2,
                             "cpu": [10.0, 11.0, 20.0, 21.0]})

    record = make_record("long", "7", "v1", None, frame, forecast, ["cpu"], SEQ_LEN, "pod")

    utc = [(t - timedelta(hours=1)).isoformat() for t in local[-SEQ_LEN:]]
    assert (record.model_name, record.model_version, record.route, record.request_id) == (
        "long", "7", "v1", None)
    assert [s.series_id for s in record.series] == ["b", "a"]
    for series, base, values in zip(record.series, (100.0, 0.0), ([10.0, 11.0], [20.0, 21.0]),
                                    strict=True):
        inputs = {"cpu": [base + k for k in range(2, 18)]}
        assert series.n_rows == SEQ_LEN
        assert series.inputs == inputs
        assert series.window_end == utc[-1] == "2024-01-01T01:25:00"
        assert series.window_hash == expected_hash(utc, inputs)
        assert series.target_times == ["2024-01-01T01:30:00", "2024-01-01T01:35:00"]
        assert series.values == {"cpu": values}
