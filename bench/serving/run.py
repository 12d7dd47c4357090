"""Serving latency and throughput: informerflow's model server against `mlflow models serve`.

Both servers serve the very same registered model (``models:/NAME@champion``, a small Informer
trained here on the bundled data through the library's own steps) on 127.0.0.1, and answer the
same single-window forecast: V2 ``/v2/models/NAME/infer`` for ours, ``dataframe_split`` on
``/invocations`` for MLflow's. For each concurrency level (1, 8, 32 clients) the two servers are
measured one after the other, so drifting load on a shared machine hits both alike.

A third server, ours with the prediction log off (``--prediction-log off``), measures what
logging every answer costs: ``log_overhead`` is the p50 latency and throughput with the log over
those without it, at each level.

Each client is a thread with its own keep-alive HTTP connection sending requests back to back
for the level's duration; latency is per request, throughput is answered requests per second.
Server CPU per request (user + system time of the server's whole process group, divided by the
requests answered) is recorded too: on a shared machine it is steadier than wall-clock numbers.

Usage:
    .venv/bin/python bench/serving/run.py --quick   # ~5 s per level and server, ~3 minutes
    .venv/bin/python bench/serving/run.py           # 20 s per level and server

Writes ``results/serving.json`` and ``results/serving.md`` next to this file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.serving")

HERE = Path(__file__).resolve().parent
LEVELS = (1, 8, 32)
MODEL_NAME = "bench-serving"
# Small, but the shape of the default product model: a 96-step window, 6-step horizon.
MODEL = {"seq_len": 96, "label_len": 48, "pred_len": 6, "d_model": 32, "n_heads": 4,
         "e_layers": 2, "d_layers": 1, "d_ff": 64}
TRAIN = {"epochs": 1, "max_train_windows": 256, "batch_size": 32}
WARMUP_REQUESTS = 20


@dataclass
class Target:
    """One server under test: how to reach it and what to send."""

    server: str
    port: int
    path: str
    body: bytes
    pgid: int  # the server's process group (its session leader's pid)


@dataclass
class Level:
    """One server at one concurrency level."""

    server: str
    clients: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    rps: float
    cpu_ms_per_request: float
    mean_batch: float | None = None  # windows per model call (informerflow's /metrics)


# -- the model ---------------------------------------------------------------------------------


def train_and_register(home: Path) -> tuple[str, dict[str, Any]]:
    """Train the small Informer through the library's steps and register it as champion.

    Returns the tracking URI and the model's input example (one request window, split orient).
    """
    import mlflow

    from informerflow import steps, tracking
    from informerflow.config import ModelConfig, RunConfig, TrainConfig

    cfg = RunConfig(model=ModelConfig(**MODEL), train=TrainConfig(**TRAIN),
                    experiment=MODEL_NAME, model_name=MODEL_NAME, deploy=False)
    steps.preprocess(cfg, home / "dataset")
    run_id = steps.train_step(home / "dataset", home / "model")
    steps.evaluate_step(home / "dataset", home / "model", run_id)
    registration = steps.register_step(run_id, MODEL_NAME)
    log.info("registered %s version %s as %s", registration.name, registration.version,
             registration.alias)
    uri = tracking.configure()
    window = mlflow.artifacts.load_dict(f"runs:/{run_id}/model/input_example.json")
    return uri, window


def request_bodies(window: dict[str, Any]) -> tuple[bytes, bytes]:
    """The same window as a V2 request (ours) and as ``dataframe_split`` (MLflow's)."""
    import pandas as pd

    from informerflow.serving.client import v2_body

    frame = pd.DataFrame(window["data"], columns=window["columns"])
    ours = json.dumps(v2_body(frame)).encode()
    theirs = json.dumps({"dataframe_split": {"columns": window["columns"],
                                             "data": window["data"]}}).encode()
    return ours, theirs


# -- the servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; see {log_path}:\n"
                             + log_path.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready within {timeout}s; see {log_path}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn may fork), SIGKILL after 15 s."""
    import signal

    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- load --------------------------------------------------------------------------------------


def post(conn: http.client.HTTPConnection, target: Target) -> tuple[int, bytes]:
    conn.request("POST", target.path, body=target.body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def client_loop(target: Target, stop_at: float, latencies: list[float],
                errors: list[str], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    mine: list[float] = []
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                status, payload = post(conn, target)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # reconnect on the next request
                conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if status != 200:
                with lock:
                    errors.append(f"HTTP {status}: {payload[:200]!r}")
                continue
            mine.append(time.perf_counter() - started)
    finally:
        conn.close()
        with lock:
            latencies.extend(mine)


def batch_totals(target: Target) -> tuple[float, float] | None:
    """Sum and count of informerflow's batch-size histogram; None for a server without it."""
    if not target.server.startswith("informerflow"):
        return None
    with urllib.request.urlopen(f"http://127.0.0.1:{target.port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(f"informerflow_batch_size{suffix}{{"):
                totals[suffix] = float(line.rsplit(" ", 1)[1])
    return totals.get("_sum", 0.0), totals.get("_count", 0.0)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (Linux)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def measure(target: Target, clients: int, seconds: float) -> Level:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    cpu_before, batches_before = group_cpu_seconds(target.pgid), batch_totals(target)
    started = time.perf_counter()
    stop_at = started + seconds
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop, target, stop_at, latencies, errors, lock)
                       for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - started  # includes the last in-flight requests
    cpu = group_cpu_seconds(target.pgid) - cpu_before
    batches_after, mean_batch = batch_totals(target), None
    if batches_before and batches_after and batches_after[1] > batches_before[1]:
        mean_batch = round((batches_after[0] - batches_before[0])
                           / (batches_after[1] - batches_before[1]), 2)
    if errors:
        log.warning("%s at %d clients: %d errors, first: %s", target.server, clients,
                    len(errors), errors[0])
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    return Level(
        server=target.server, clients=clients, seconds=round(elapsed, 2),
        requests=len(latencies), errors=len(errors),
        p50_ms=round(percentile(ms, 50), 2), p99_ms=round(percentile(ms, 99), 2),
        mean_ms=round(statistics.fmean(ms), 2), rps=round(len(latencies) / elapsed, 1),
        cpu_ms_per_request=round(1000 * cpu / max(len(latencies), 1), 1), mean_batch=mean_batch,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def warm_up(target: Target) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    try:
        for _ in range(WARMUP_REQUESTS):
            status, payload = post(conn, target)
            if status != 200:
                raise SystemExit(f"{target.server} answered {status}: {payload[:500]!r}")
    finally:
        conn.close()
    return json.loads(payload)


def forecast_values(server: str, answer: dict[str, Any], column: str) -> list[float]:
    if server.startswith("informerflow"):
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        return [float(v) for v in outputs[column]]
    return [float(row[column]) for row in answer["predictions"]]


# -- report ------------------------------------------------------------------------------------


def ratios(levels: list[Level], field: str = "rps", against: str = "mlflow") -> dict[str, float]:
    """informerflow's ``field`` over ``against``'s, per client count."""
    value = {(lv.server, lv.clients): getattr(lv, field) for lv in levels}
    return {str(n): round(value[("informerflow", n)] / value[(against, n)], 2)
            for n in LEVELS if value.get((against, n))}


def environment() -> dict[str, Any]:
    import mlflow
    import torch

    from informerflow import __version__

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__,
        "mlflow": mlflow.__version__, "informerflow": __version__,
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def clients(n: int) -> str:
    return f"{n} client" if n == 1 else f"{n} clients"


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    env, levels = result["environment"], [Level(**lv) for lv in result["levels"]]
    lines = [
        "# Serving: informerflow vs `mlflow models serve`",
        "",
        f"{result['mode']} mode, {result['seconds_per_level']:g} s per level and server, "
        f"{env['date']}, {env['cpu_count']} CPUs, 1-minute load average "
        f"{env['load_avg_at_start'][0]} before and {env['load_avg_at_end'][0]} after.",
        f"One {MODEL['seq_len']}-step window per request, {MODEL['pred_len']}-step forecast, "
        f"the same registered model (`models:/{MODEL_NAME}@champion`) on both servers.",
        "",
        "| server | clients | p50 ms | p99 ms | req/s | server CPU ms/req | windows/model call "
        "| requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        batch = "-" if lv.mean_batch is None else f"{lv.mean_batch:.2f}"
        lines.append(f"| {lv.server} | {lv.clients} | {lv.p50_ms:.1f} | {lv.p99_ms:.1f} | "
                     f"{lv.rps:.1f} | {lv.cpu_ms_per_request:.1f} | {batch} | {lv.requests} | "
                     f"{lv.errors} |")
    ratio = result["throughput_ratio"]
    lines += [
        "",
        "Throughput ratio informerflow / mlflow: "
        + ", ".join(f"{ratio[str(n)]:.2f}x at {clients(n)}" for n in LEVELS if str(n) in ratio)
        + f". Goal: >= 2x at 8 clients ({'met' if ratio.get('8', 0) >= 2 else 'not met'}).",
        "Server CPU per request, mlflow / informerflow: "
        + ", ".join(f"{1 / c:.2f}x at {clients(int(n))}"
                    for n, c in result["cpu_per_request_ratio"].items() if c) + ".",
        f"Forecasts of the two servers agree to {result['max_abs_forecast_diff']:.2e}.",
        "Prediction log on / off (informerflow vs informerflow-nolog): p50 latency "
        + ", ".join(f"{r:.2f}x at {clients(int(n))}"
                    for n, r in result["log_overhead"]["p50_ratio"].items())
        + "; throughput "
        + ", ".join(f"{r:.2f}x at {clients(int(n))}"
                    for n, r in result["log_overhead"]["rps_ratio"].items()) + ".",
        "",
    ]
    path.write_text("\n".join(lines))


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s per level instead of 20 s")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per level")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    seconds = args.seconds or (5.0 if args.quick else 20.0)

    home = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["INFORMERFLOW_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    processes: list[subprocess.Popen] = []
    try:
        env_info = environment()
        tracking_uri, window = train_and_register(home)
        ours_body, theirs_body = request_bodies(window)
        model_uri = f"models:/{MODEL_NAME}@champion"
        # `mlflow models serve` runs `uvicorn` by name: the venv's bin must be on PATH.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
        ports = {"informerflow": free_port(), "informerflow-nolog": free_port(),
                 "mlflow": free_port()}
        commands = {
            # Defaults as shipped: micro-batching on, torch threads min(2, cores // 2).
            "informerflow": [sys.executable, "-m", "informerflow.serving", "--model-uri",
                             model_uri, "--port", str(ports["informerflow"])],
            "informerflow-nolog": [sys.executable, "-m", "informerflow.serving", "--model-uri",
                                   model_uri, "--port", str(ports["informerflow-nolog"]),
                                   "--prediction-log", "off"],
            # One uvicorn worker, MLflow's default; torch threads are torch's default.
            "mlflow": [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager",
                       "local", "-m", model_uri, "-h", "127.0.0.1", "-p", str(ports["mlflow"])],
        }
        health = {"informerflow": "/v2/health/ready", "informerflow-nolog": "/v2/health/ready",
                  "mlflow": "/ping"}
        for server, command in commands.items():
            log_path = home / f"{server}.log"
            processes.append(start(command, env, log_path))
            wait_ready(processes[-1], f"http://127.0.0.1:{ports[server]}{health[server]}",
                       log_path)
            log.info("%s ready on port %d", server, ports[server])

        targets = [
            Target("informerflow", ports["informerflow"], f"/v2/models/{MODEL_NAME}/infer",
                   ours_body, processes[0].pid),
            Target("informerflow-nolog", ports["informerflow-nolog"],
                   f"/v2/models/{MODEL_NAME}/infer", ours_body, processes[1].pid),
            Target("mlflow", ports["mlflow"], "/invocations", theirs_body, processes[2].pid),
        ]
        column = window["columns"][-1]
        answers = {t.server: forecast_values(t.server, warm_up(t), column) for t in targets}
        diff = max(abs(a - b) for a, b in zip(answers["informerflow"], answers["mlflow"],
                                               strict=True))
        levels = []
        for clients in LEVELS:
            for target in targets:
                levels.append(measure(target, clients, seconds))
                log.info("%s", levels[-1])
    finally:
        for process in processes:
            stop(process)
        if args.keep:
            log.info("state kept in %s", home)
        else:
            shutil.rmtree(home, ignore_errors=True)

    env_info["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "mode": "quick" if args.quick else "full", "seconds_per_level": seconds,
        "environment": env_info, "model": MODEL, "train": TRAIN,
        "request": {"rows": len(window["data"]), "columns": window["columns"]},
        "max_abs_forecast_diff": diff,
        "levels": [asdict(lv) for lv in levels], "throughput_ratio": ratios(levels),
        "cpu_per_request_ratio": ratios(levels, "cpu_ms_per_request"),
        "log_overhead": {
            "p50_ratio": ratios(levels, "p50_ms", against="informerflow-nolog"),
            "rps_ratio": ratios(levels, "rps", against="informerflow-nolog"),
        },
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "serving.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out / "serving.md", result)
    print((out / "serving.md").read_text())


if __name__ == "__main__":
    main()
