"""Forecasts against what really happened: accuracy, coverage, drift and alerts.

:func:`run_monitor` reads the prediction log and a file of actual values, joins them on
(series, target time, column) and, for every model version in the log, computes

* accuracy (MAE, RMSE, MAPE) overall, per horizon step, per series, and over consecutive
  windows of ``window`` steps of the model's frequency (accuracy over time);
* coverage: the share of logged forecast values that have an actual yet;
* input drift of the windows the model was sent against its training split (see ``drift``),
  overall and per window of time;
* alerts, when accuracy fell too far below the model's own test MAE or the inputs drifted.

Results go to a monitoring run in MLflow (experiment ``<model>-monitoring``, one run per model
version, figures over time as step metrics stamped with their time), to the caller as a
:class:`MonitorReport`, and to ``<state dir>/monitoring/<model>/v<version>.json``, which the
model server reads for its ``/dashboard`` page and Prometheus gauges.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from informerflow import tracking
from informerflow.data.ingest import TIME_NAMES
from informerflow.data.readers import parse_table, read_bytes, to_float, unpack
from informerflow.data.validate import fmt_rows, parse_stamps
from informerflow.errors import ConfigError, DataError, ModelLoadError
from informerflow.evaluate import regression_metrics
from informerflow.forecaster import Forecaster
from informerflow.monitoring import drift, status
from informerflow.monitoring.predlog import LoggedForecasts, PredictionLog

log = logging.getLogger(__name__)

RECENT_POINTS = 720  # actual/forecast pairs per series kept for the dashboard


@dataclass
class Thresholds:
    """When a monitoring result becomes an alert.

    The drift limits are set for autocorrelated operational metrics, not the credit-scoring
    convention of PSI 0.25, which assumes independent samples. Measured on the bundled pod CPU
    series: against a model trained on the first half, the unaltered second half scores PSI 0.88,
    KS 0.26, a mean shift of 0.53 sd and spread x1.12, and one day of the training split itself
    scores PSI 0.87 against the whole split. That is ordinary movement of this workload, so the
    defaults sit well above it; a workload that really changed (the same half doubled plus 0.03)
    scores PSI 8.3, KS 1.0 and a mean shift of 9.4 sd.
    """

    max_mae_ratio: float = 1.5  # recent MAE / the model's test MAE
    max_psi: float = 1.5
    max_ks: float = 0.4
    max_mean_shift: float = 1.0  # in reference standard deviations
    max_std_ratio: float = 2.0  # either way: above 2 or below 1/2

    def validate(self) -> None:
        for name, value in asdict(self).items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value > 0):
                raise ConfigError(f"monitor threshold {name} must be a positive number, "
                                  f"got {value!r}")
        if self.max_std_ratio <= 1:
            raise ConfigError(f"max_std_ratio must be above 1 (it bounds the ratio both ways), "
                              f"got {self.max_std_ratio}")


@dataclass
class VersionReport:
    """Monitoring figures of one model version."""

    model_name: str
    version: str
    overall: dict[str, float | None]
    horizon_mae: list[float | None]
    drift: dict[str, dict[str, float]]
    series: list[dict]
    alerts: list[str]
    test_mae: float | None = None
    run_id: str | None = None
    status_file: str | None = None

    @property
    def alert(self) -> bool:
        return bool(self.alerts)


@dataclass
class MonitorReport:
    """Everything one ``informerflow monitor`` call found."""

    actuals: str
    log_path: str
    versions: list[VersionReport] = field(default_factory=list)
    retrain: dict | None = None

    @property
    def alert(self) -> bool:
        return any(v.alert for v in self.versions)


# -- actuals ---------------------------------------------------------------------------------


def read_actuals(
    path: str | Path, columns: list[str], time_col: str | None = None, id_col: str | None = None,
) -> pd.DataFrame:
    """Actual values in long form: ``series_id``, ``time`` (UTC, naive), ``column``, ``actual``.

    Rows whose value is empty are skipped (not observed yet); a stamp given twice keeps its last
    row, since a later line is a correction. Columns of ``columns`` absent from the file are
    skipped; at least one must be present.

    Raises:
        DataError: naming the file, and the column or rows that cannot be used.
    """
    source = str(path)
    table = parse_table(unpack(read_bytes(Path(path)), source), source)
    cells = table.frame
    names = [str(c) for c in cells.columns]
    time_name = _column(names, time_col, TIME_NAMES, source, "time column", "--time-col")
    present = [c for c in columns if c in names]
    if not present:
        raise DataError(f"{source}: none of the model's columns ({', '.join(columns)}) is in the "
                        f"file; its columns are {', '.join(names)}")
    if id_col and id_col not in names:
        raise DataError(f"{source}: the model forecasts several series, but the id column "
                        f"{id_col!r} is not in the file (columns: {', '.join(names)})")
    rows = np.arange(1, len(cells) + 1)
    parsed = parse_stamps(cells[time_name], rows, None, time_name)
    if parsed.problems:
        raise DataError(f"{source}: " + "; ".join(parsed.problems[:3]))
    frame = pd.DataFrame({"time": parsed.stamps.to_numpy(), "row": rows})
    frame["series_id"] = cells[id_col].astype(str).str.strip().to_numpy() if id_col else ""
    for name in present:
        values, text = to_float(cells[name], table.decimal)
        if text.any():
            raise DataError(f"{source}: column {name!r} holds text that is not a number at "
                            f"{fmt_rows(rows[text])} (1-based data rows); fix or empty them")
        frame[name] = values
    frame = frame.dropna(subset=["time"])
    long = frame.melt(id_vars=["series_id", "time"], value_vars=present, var_name="column",
                      value_name="actual")
    # Empty cells go before duplicates are resolved: a later row that leaves a column empty
    # corrects the other columns, not that one.
    long = long[np.isfinite(long["actual"])]
    return long.drop_duplicates(["series_id", "time", "column"], keep="last").reset_index(
        drop=True)


def _column(names: list[str], given: str | None, defaults: tuple[str, ...], source: str,
            what: str, option: str) -> str:
    if given is not None:
        if given not in names:
            raise DataError(f"{source}: {option} {given!r} is not a column; the columns are "
                            f"{', '.join(names)}")
        return given
    lowered = {n.lower(): n for n in names}
    for candidate in defaults:
        if candidate in lowered:
            return lowered[candidate]
    raise DataError(f"{source}: no {what} (none of {', '.join(defaults)}) among "
                    f"{', '.join(names)}; pass {option}")


# -- the computation -------------------------------------------------------------------------


@dataclass
class ModelFacts:
    """What the monitor needs to know about a served model version."""

    target: str
    output_cols: list[str]
    input_cols: list[str]
    freq: str
    id_col: str | None
    reference: dict[str, drift.ColumnProfile] | None
    test_mae: float | None


def model_facts(name: str, version: str) -> ModelFacts:
    """Spec, reference profile and test MAE of a registered model version.

    Raises:
        ModelLoadError: the version is not in the registry.
    """
    from informerflow.pyfunc import load_forecaster

    client = MlflowClient()
    try:
        mv = client.get_model_version(name, version)
        forecaster: Forecaster = load_forecaster(f"models:/{name}/{version}")
    except Exception as exc:  # MLflow raises several types for "not there"
        raise ModelLoadError(
            f"model {name} v{version} from the prediction log is not in the registry at "
            f"{tracking.redact(mlflow.get_tracking_uri())} ({type(exc).__name__}); point "
            "--tracking-uri at the store the server loaded it from"
        ) from exc
    test_mae = client.get_run(mv.run_id).data.metrics.get("test_mae") if mv.run_id else None
    spec = forecaster.spec
    return ModelFacts(spec.target, list(spec.output_cols), list(spec.input_cols), spec.freq,
                      spec.id_col, forecaster.reference, test_mae)


def assess_version(
    name: str, version: str, logged: LoggedForecasts, actuals: pd.DataFrame, facts: ModelFacts,
    thresholds: Thresholds, window: int,
) -> VersionReport:
    """Accuracy, coverage, drift and alerts of one version's logged forecasts."""
    mine = logged.forecasts[(logged.forecasts["model_name"] == name)
                            & (logged.forecasts["model_version"] == version)]
    mine = mine[mine["column"].isin(facts.output_cols)]
    pairs = mine.merge(actuals, left_on=["series_id", "target_time", "column"],
                       right_on=["series_id", "time", "column"], how="inner")
    width = _span(facts.freq, window)
    overall = _accuracy(pairs) | {"forecasts": len(mine),
                                  "coverage": len(pairs) / len(mine) if len(mine) else None}
    steps = int(mine["step"].max()) if len(mine) else 0
    horizon = [_mae(pairs[pairs["step"] == h]) for h in range(1, steps + 1)]
    mine_windows = LoggedForecasts(mine, logged.windows[
        (logged.windows["model_name"] == name) & (logged.windows["model_version"] == version)])
    observed = {col: mine_windows.observed(col, facts.freq) for col in facts.input_cols}

    series = []
    for sid in sorted(mine["series_id"].unique()):
        s_pairs = pairs[pairs["series_id"] == sid]
        s_mine = mine[mine["series_id"] == sid]
        series.append({
            "id": sid,
            "overall": _accuracy(s_pairs) | {
                "coverage": len(s_pairs) / len(s_mine) if len(s_mine) else None},
            "accuracy": _over_time(s_pairs, width),
            "drift": _drift_over_time(observed, sid, facts, width),
            "drift_overall": _drift(observed, sid, facts),
            **_recent(s_pairs, actuals[actuals["series_id"] == sid], facts.target),
        })
    drift_all = _drift(observed, None, facts)
    test_mae = facts.test_mae
    overall["test_mae"] = test_mae
    overall["mae_ratio"] = (overall["mae"] / test_mae
                            if overall["mae"] is not None and test_mae else None)
    alerts = _alerts(overall, drift_all, thresholds)
    return VersionReport(name, version, overall, horizon, drift_all, series, alerts, test_mae)


def _span(freq: str, steps: int) -> pd.Timedelta:
    """``steps`` steps of ``freq`` as a fixed duration (a month counts from 2000-01-01)."""
    origin = pd.Timestamp("2000-01-01")
    return (origin + pd.tseries.frequencies.to_offset(freq) * steps) - origin


def _accuracy(pairs: pd.DataFrame) -> dict[str, float | None]:
    if pairs.empty:
        return {"mae": None, "rmse": None, "mape": None, "n_pairs": 0}
    m = regression_metrics(pairs["value"].to_numpy(), pairs["actual"].to_numpy())
    return {"mae": m["mae"], "rmse": m["rmse"], "mape": _finite(m["mape"]),
            "n_pairs": int(len(pairs))}


def _mae(pairs: pd.DataFrame) -> float | None:
    return float(np.mean(np.abs(pairs["value"] - pairs["actual"]))) if len(pairs) else None


def _buckets(times: pd.Series, width: pd.Timedelta) -> pd.Series:
    """Consecutive windows of ``width``, aligned to the epoch, labelled by their end."""
    start = times.dt.floor(width) if width > pd.Timedelta(0) else times
    return start + width


def _over_time(pairs: pd.DataFrame, width: pd.Timedelta) -> list[dict]:
    if pairs.empty:
        return []
    out = []
    for end, g in pairs.groupby(_buckets(pairs["target_time"], width), sort=True):
        out.append({"time": end.isoformat()} | _accuracy(g))
        out[-1]["n"] = out[-1].pop("n_pairs")
    return out


def _drift(observed: dict[str, pd.DataFrame], sid: str | None,
           facts: ModelFacts) -> dict[str, dict[str, float]]:
    if not facts.reference:
        return {}
    out = {}
    for col, frame in observed.items():
        profile = facts.reference.get(col)
        values = frame if sid is None else frame[frame["series_id"] == sid]
        result = drift.measure(profile, values["value"].to_numpy()) if profile else None
        if result is not None:
            out[col] = result.as_dict()
    return out


def _drift_over_time(observed: dict[str, pd.DataFrame], sid: str, facts: ModelFacts,
                     width: pd.Timedelta) -> list[dict]:
    """PSI and KS of the target's observed values per window of time."""
    profile = (facts.reference or {}).get(facts.target)
    frame = observed.get(facts.target)
    if profile is None or frame is None or frame.empty:
        return []
    values = frame[frame["series_id"] == sid]
    out = []
    for end, g in values.groupby(_buckets(values["time"], width), sort=True):
        result = drift.measure(profile, g["value"].to_numpy())
        if result is not None:
            out.append({"time": end.isoformat(), "psi": result.psi, "ks": result.ks,
                        "n": result.n})
    return out


def _recent(pairs: pd.DataFrame, actuals: pd.DataFrame, target: str) -> dict:
    """The last actuals and the 1-step-ahead forecasts of the target, for the dashboard."""
    act = actuals[actuals["column"] == target].sort_values("time").tail(RECENT_POINTS)
    first = pairs[(pairs["column"] == target) & (pairs["step"] == 1)]
    first = first.sort_values("served_at").drop_duplicates("target_time", keep="last")
    first = first[first["target_time"] >= act["time"].min()] if len(act) else first.iloc[0:0]
    first = first.sort_values("target_time")
    return {
        "actual": {"time": [t.isoformat() for t in act["time"]],
                   "value": act["actual"].astype(float).tolist()},
        "forecast": {"time": [t.isoformat() for t in first["target_time"]],
                     "value": first["value"].astype(float).tolist()},
    }


def _alerts(overall: dict, drifts: dict[str, dict[str, float]], t: Thresholds) -> list[str]:
    alerts = []
    ratio = overall.get("mae_ratio")
    if ratio is not None and ratio > t.max_mae_ratio:
        alerts.append(f"accuracy: MAE {overall['mae']:.4g} is {ratio:.2f}x the model's test "
                      f"MAE {overall['test_mae']:.4g} (limit {t.max_mae_ratio:g}x)")
    for col, d in drifts.items():
        found = []
        if d["psi"] > t.max_psi:
            found.append(f"PSI {d['psi']:.3g} > {t.max_psi:g}")
        if d["ks"] > t.max_ks:
            found.append(f"KS {d['ks']:.3g} > {t.max_ks:g}")
        if abs(d["mean_shift"]) > t.max_mean_shift:
            found.append(f"mean moved {d['mean_shift']:+.3g} sd (limit {t.max_mean_shift:g})")
        ratio = d["std_ratio"]
        if math.isfinite(ratio) and not 1 / t.max_std_ratio <= ratio <= t.max_std_ratio:
            found.append(f"spread x{ratio:.3g} (limit x{t.max_std_ratio:g} either way)")
        if found:
            alerts.append(f"drift: {col} " + ", ".join(found))
    return alerts


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# -- the whole call --------------------------------------------------------------------------


def run_monitor(
    actuals_path: str | Path,
    model_name: str | None = None,
    log_path: str | Path | None = None,
    since: str | None = None,
    thresholds: Thresholds | None = None,
    window: int = 60,
    time_col: str | None = None,
    track: bool = True,
) -> MonitorReport:
    """Monitor every model version in the prediction log against the actuals file.

    Raises:
        ConfigError: a threshold or ``window`` is out of range.
        DataError: the log holds no forecast to monitor, or the actuals file is unusable.
        ModelLoadError: a logged version is missing from the registry.
    """
    thresholds = thresholds or Thresholds()
    thresholds.validate()
    if window < 1:
        raise ConfigError(f"window must be 1 step or more (--window), got {window}")
    store = PredictionLog(Path(log_path).resolve() if log_path else None)
    actuals_path = _actuals_file(actuals_path)
    tracking.configure()
    logged = store.read(model_name, since)
    if logged.forecasts.empty:
        which = f" for model {model_name!r}" if model_name else ""
        raise DataError(f"the prediction log {store.path} holds no forecasts{which}"
                        f"{f' served since {since}' if since else ''}; send requests to an "
                        "endpoint first (the server logs every answer there)")
    report = MonitorReport(str(actuals_path), str(store.path))
    keys = logged.forecasts[["model_name", "model_version"]].drop_duplicates()
    results = []
    for name, version in keys.itertuples(index=False):
        if not version:
            log.warning("skipping forecasts of %s served without a registry version", name)
            continue
        facts = model_facts(name, version)
        _check_window(window, facts.freq)
        actuals = read_actuals(actuals_path, facts.output_cols, time_col, facts.id_col)
        results.append((assess_version(name, version, logged, actuals, facts, thresholds,
                                       window), actuals))
    if results and not any(r.overall["n_pairs"] for r, _ in results):
        # Nothing to compare is a mistake (wrong file, wrong zone), not a perfect score: say so,
        # and keep the figures of the last good run where the server shows them.
        raise DataError(_no_overlap(actuals_path, logged, results[0][1]))
    for result, _ in results:
        result.status_file = str(status.write_status(result, str(actuals_path)))
        if track:
            result.run_id = log_to_mlflow(result, report, thresholds, window, since)
        report.versions.append(result)
        log.info("monitored %s v%s: %s", result.model_name, result.version,
                 "; ".join(result.alerts) if result.alerts else "no alert")
    return report


def _actuals_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file; check --actuals")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; pass a CSV or Parquet file to --actuals")
    return path


_MAX_WINDOW = pd.Timedelta(days=36_525)  # window ends must stay within pandas' ~584 years


def _check_window(window: int, freq: str) -> None:
    try:
        fits = _span(freq, window) <= _MAX_WINDOW
    except (OverflowError, ValueError, pd.errors.OutOfBoundsTimedelta):
        fits = False
    if not fits:
        raise ConfigError(f"--window {window} steps of {freq!r} is longer than 100 years; use "
                          "a smaller window")


def _no_overlap(path: str | Path, logged: LoggedForecasts, actuals: pd.DataFrame) -> str:
    times = logged.forecasts["target_time"]
    span = f"forecasts cover {times.min()} to {times.max()} (UTC)"
    if actuals.empty:
        return f"{path}: holds no actual values (every value is empty); {span}"
    return (f"{path}: no actual value matches a logged forecast: actuals cover "
            f"{actuals['time'].min()} to {actuals['time'].max()} (UTC), {span}; check the "
            "file, its time zone and the series ids")


def log_to_mlflow(result: VersionReport, report: MonitorReport, t: Thresholds, window: int,
                  since: str | None) -> str:
    """One monitoring run: figures as metrics, figures over time as timestamped step metrics."""
    experiment = tracking.ensure_experiment(f"{result.model_name}-monitoring")
    tags = {"model_name": result.model_name, "model_version": result.version,
            "alert": str(result.alert).lower(), "alerts": "\n".join(result.alerts)[:5000]}
    with mlflow.start_run(experiment_id=experiment, tags=tags,
                          run_name=f"monitor v{result.version}") as run:
        mlflow.log_params({"actuals": report.actuals, "prediction_log": report.log_path,
                           "since": since or "", "window_steps": window,
                           **{f"threshold_{k}": v for k, v in asdict(t).items()}})
        mlflow.log_metrics(_numbers(result.overall))
        for col, figures in result.drift.items():
            mlflow.log_metrics(_numbers({f"drift_{k}_{tracking.safe_name(col)}": v
                                         for k, v in figures.items()}))
        for h, mae in enumerate(result.horizon_mae, start=1):
            if mae is not None:
                mlflow.log_metric("mae_by_horizon", mae, step=h)
        many = len(result.series) > 1
        for s in result.series:
            prefix = f"series_{tracking.safe_name(s['id'])}_" if many else ""
            if many:
                mlflow.log_metrics(_numbers({prefix + k: v for k, v in s["overall"].items()}))
            for i, point in enumerate(s["accuracy"]):
                stamp = _millis(point["time"])
                for key in ("mae", "rmse", "mape"):
                    if point[key] is not None:
                        mlflow.log_metric(f"{prefix}rolling_{key}", point[key], step=i,
                                          timestamp=stamp)
            for i, point in enumerate(s["drift"]):
                stamp = _millis(point["time"])
                mlflow.log_metric(f"{prefix}rolling_psi", point["psi"], step=i, timestamp=stamp)
                mlflow.log_metric(f"{prefix}rolling_ks", point["ks"], step=i, timestamp=stamp)
        with tempfile.TemporaryDirectory() as tmp:
            from informerflow import plots

            for s in result.series[:8]:
                png = Path(tmp) / f"monitor_{tracking.safe_name(s['id']) or 'series'}.png"
                plots.monitor(s, png)
                mlflow.log_artifact(str(png), "plots")
        mlflow.log_dict({"overall": result.overall, "horizon_mae": result.horizon_mae,
                         "drift": result.drift, "alerts": result.alerts}, "monitor.json")
        return run.info.run_id


def _numbers(figures: dict) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _millis(iso: str) -> int:
    stamp = pd.Timestamp(iso)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.timestamp() * 1000)


