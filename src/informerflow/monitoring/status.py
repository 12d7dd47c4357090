"""The latest monitoring figures of a model version, as the model server shows them.

``informerflow monitor`` writes one JSON file per model version under
``<state dir>/monitoring/<model>/v<version>.json`` (atomically: write, then rename). The server
never computes accuracy itself; it reads that file when ``/dashboard`` or ``/metrics`` is asked
for, so the figures are as fresh as the last monitor run and a server restart loses nothing.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from informerflow import state, tracking

if TYPE_CHECKING:
    from informerflow.monitoring.monitor import VersionReport

log = logging.getLogger(__name__)


def status_path(model_name: str, version: str) -> Path:
    folder = tracking.safe_name(model_name) or "_"
    return state.state_dir() / "monitoring" / folder / f"v{tracking.safe_name(version)}.json"


def write_status(result: VersionReport, actuals: str) -> Path:
    """Write the dashboard's and the gauges' copy of a version's latest figures."""
    path = status_path(result.model_name, result.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    status = {
        "monitor": {
            "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "actuals": actuals, "alert": result.alert, "alerts": result.alerts,
            "overall": result.overall, "drift": result.drift,
        },
        "series": [
            {k: s[k] for k in ("id", "actual", "forecast", "accuracy", "drift", "overall")}
            for s in result.series
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(clean(status), allow_nan=False))
    tmp.replace(path)  # atomic: the server never reads half a file
    return path


def read_status(model_name: str, version: str | None) -> dict | None:
    """The latest figures of a version, or None if it was never monitored."""
    if version is None:
        return None
    try:
        return json.loads(status_path(model_name, version).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the monitoring status of %s v%s: %s", model_name, version, exc)
        return None


def dashboard_data(model_name: str, version: str | None, model_uri: str | None,
                   target: str, log_path: Path | None) -> dict:
    """Everything ``/dashboard`` draws: the monitor's figures plus the newest logged forecasts."""
    status = read_status(model_name, version) or {"monitor": None, "series": []}
    series = {s["id"]: dict(s) for s in status["series"]}
    for sid, latest in latest_forecasts(log_path, model_name, version, target).items():
        series.setdefault(sid, _empty_series(sid))["latest"] = latest
    for entry in series.values():
        entry.setdefault("latest", {"time": [], "value": []})
    return clean({
        "model": {"name": model_name, "version": version, "uri": model_uri},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "monitor": status["monitor"],
        "series": [series[sid] for sid in sorted(series)],
    })


def latest_forecasts(log_path: Path | None, model_name: str, version: str | None,
                     column: str, scan: int = 500) -> dict[str, dict[str, list]]:
    """The newest logged forecast of ``column`` per series, among the last ``scan`` requests."""
    if log_path is None or not Path(log_path).is_file():
        return {}
    query = (
        "SELECT f.series_id, f.target_time, f.value, r.served_at, f.record_id "
        "FROM forecasts f JOIN (SELECT record_id, served_at FROM requests "
        "WHERE model_name = ? AND model_version IS ? ORDER BY served_at DESC LIMIT ?) r "
        "USING (record_id) WHERE f.column = ?"
    )
    try:
        conn = sqlite3.connect(f"{Path(log_path).resolve().as_uri()}?mode=ro", uri=True,
                               timeout=1.0)
        try:
            rows = pd.read_sql_query(query, conn, params=(model_name, version, scan, column))
        finally:
            conn.close()
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        log.warning("cannot read the prediction log %s: %s", log_path, exc)
        return {}
    out = {}
    for sid, g in rows.groupby("series_id"):
        newest = g[g["record_id"] == g.sort_values("served_at")["record_id"].iloc[-1]]
        newest = newest.sort_values("target_time")
        out[str(sid)] = {"time": newest["target_time"].tolist(),
                         "value": newest["value"].astype(float).tolist()}
    return out


class MonitorCollector(Collector):
    """Prometheus gauges of a served version's latest monitoring figures, read at scrape time."""

    def __init__(self, model_name: str, version: str | None):
        self.model_name, self.version = model_name, version

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = read_status(self.model_name, self.version)
        labels = ["model_name", "model_version"]
        ident = [self.model_name, str(self.version)]
        alert = GaugeMetricFamily("informerflow_monitor_alert",
                                  "1 when the last monitor run raised this kind of alert",
                                  labels=[*labels, "kind"])
        if status is None:
            yield alert
            return
        monitor = status["monitor"]
        kinds = {line.split(":", 1)[0] for line in monitor["alerts"]}
        for kind in ("accuracy", "drift"):
            alert.add_metric([*ident, kind], 1.0 if kind in kinds else 0.0)
        yield alert
        ran = GaugeMetricFamily("informerflow_monitor_last_run_timestamp_seconds",
                                "When the last monitor run finished (Unix time)", labels=labels)
        ran.add_metric(ident, datetime.fromisoformat(monitor["ran_at"]).timestamp())
        yield ran
        for key, text in (("mae", "MAE of logged forecasts against actuals"),
                          ("rmse", "RMSE of logged forecasts against actuals"),
                          ("mape", "MAPE (%) of logged forecasts against actuals"),
                          ("coverage", "Share of logged forecast values with an actual"),
                          ("mae_ratio", "Monitored MAE over the model's test MAE")):
            value = monitor["overall"].get(key)
            if value is not None:
                gauge = GaugeMetricFamily(f"informerflow_monitor_{key}", text, labels=labels)
                gauge.add_metric(ident, float(value))
                yield gauge
        for key in ("psi", "ks", "mean_shift", "std_ratio"):
            gauge = GaugeMetricFamily(f"informerflow_monitor_drift_{key}",
                                      f"Input drift ({key}) against the training split",
                                      labels=[*labels, "column"])
            for col, figures in monitor["drift"].items():
                if figures.get(key) is not None:
                    gauge.add_metric([*ident, col], float(figures[key]))
            yield gauge


def clean(value: object) -> object:
    """``value`` with NaN and infinities as None: JSON has no spelling for them."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _empty_series(sid: str) -> dict:
    return {"id": sid, "actual": {"time": [], "value": []},
            "forecast": {"time": [], "value": []}, "accuracy": [], "drift": [],
            "overall": {"mae": None, "rmse": None, "mape": None, "coverage": None}}


