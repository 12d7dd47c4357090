"""Retraining after an alert: a new pipeline run on recent data, promoted only if it is better.

The new model is trained by the ordinary pipeline (``informerflow run`` minus the deploy step)
with the champion's configuration and the recent data in place of the original file. It then
registers as the *challenger*: its test split is another file's, so the registry's own rule
(equal data, lower test MAE) cannot compare it with the champion. The comparison happens here
instead, on one window both models have not trained on: the last ``1 - train_frac - val_frac``
of the recent file (the new model's test split; the champion never saw the recent file at all).
Both forecast the same target steps from the same history, step by ``pred_len``, and the new
model becomes champion only if its MAE there is lower.

Known shortcoming: a promotion does not restart running endpoints; they serve the version they
loaded until restarted (``informerflow deploy models:/NAME@champion``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from rich.console import Console

from informerflow import tracking
from informerflow.data.ingest import load_series
from informerflow.data.windows import split_bounds
from informerflow.forecaster import TIME, Forecaster

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    """What a retraining did and why."""

    model_name: str
    champion_version: str
    new_version: str
    champion_mae: float
    new_mae: float
    n_targets: int
    promoted: bool

    @property
    def summary(self) -> str:
        verdict = (f"v{self.new_version} is now champion" if self.promoted
                   else f"v{self.champion_version} stays champion; v{self.new_version} is "
                        "challenger")
        return (f"{self.model_name}: on the recent test window ({self.n_targets} values) the new "
                f"model's MAE is {self.new_mae:.6g} against the champion's "
                f"{self.champion_mae:.6g}; {verdict}")


def retrain(model_name: str, recent_path: str, console: Console | None = None) -> RetrainResult:
    """Train on ``recent_path`` with the champion's settings; promote the result if it wins.

    Raises:
        ModelLoadError: the model has no champion to start from.
        DataError / PipelineError / TrainingError: as ``informerflow run`` does.
    """
    from informerflow.pyfunc import load_forecaster
    from informerflow.runner import run_pipeline

    tracking.configure()
    client = MlflowClient()
    champion_mv = client.get_model_version_by_alias(model_name, tracking.CHAMPION)
    champion = load_forecaster(f"models:/{model_name}/{champion_mv.version}")
    experiment = client.get_experiment(client.get_run(champion_mv.run_id).info.experiment_id)

    cfg = copy.deepcopy(champion.spec.config)
    cfg.data.path = str(recent_path)
    cfg.experiment, cfg.model_name, cfg.deploy = experiment.name, model_name, False
    log.info("retraining %s on %s with the settings of v%s", model_name, recent_path,
             champion_mv.version)
    summary = run_pipeline(cfg, console=console or Console(quiet=True))
    new_version = str(summary["registration"]["version"])
    challenger = load_forecaster(f"models:/{model_name}/{new_version}")

    series = load_series(cfg.data)
    old_mae, new_mae, n = compare_on_recent(champion, challenger, series.frame, cfg)
    promoted = new_mae < old_mae
    reason = (f"retrained after a monitoring alert; recent-window MAE {new_mae:.6g} vs "
              f"champion v{champion_mv.version} {old_mae:.6g}")
    if promoted:
        tracking.promote(model_name, new_version)
    client.set_model_version_tag(model_name, new_version, "alias_reason", reason)
    result = RetrainResult(model_name, str(champion_mv.version), new_version, old_mae, new_mae,
                           n, promoted)
    log.info("%s", result.summary)
    return result


def compare_on_recent(a: Forecaster, b: Forecaster, frame: pd.DataFrame,
                      cfg) -> tuple[float, float, int]:
    """MAE of ``a`` and of ``b`` on the same targets of the test split of ``frame``.

    Returns ``(mae_a, mae_b, number of target values)``. Long-format frames are compared per
    series, and the errors pooled.
    """
    id_col = cfg.data.id_col
    groups = frame.groupby(id_col, sort=False) if id_col else [(None, frame)]
    errors_a, errors_b = [], []
    seq_len = max(a.seq_len, b.seq_len)
    pred_len = min(a.pred_len, b.pred_len)
    for _, rows in groups:
        rows = rows.drop(columns=[id_col]) if id_col else rows
        rows = rows.rename(columns={"date": TIME}).reset_index(drop=True)
        bounds = split_bounds(len(rows), cfg.data.train_frac, cfg.data.val_frac, seq_len,
                              pred_len)
        starts = list(range(max(bounds.test[0], seq_len), len(rows) - pred_len + 1, pred_len))
        if not starts:
            continue
        truth = np.stack([rows[a.output_cols].to_numpy()[t:t + pred_len] for t in starts])
        for model, sink in ((a, errors_a), (b, errors_b)):
            windows = [rows.iloc[t - model.seq_len:t] for t in starts]
            preds = np.stack([out[model.output_cols].to_numpy()[:pred_len]
                              for out in _batched(model, windows)])
            sink.append(np.abs(preds - truth).ravel())
    pooled_a, pooled_b = np.concatenate(errors_a), np.concatenate(errors_b)
    return float(pooled_a.mean()), float(pooled_b.mean()), len(pooled_a)


def _batched(model: Forecaster, windows: list[pd.DataFrame], size: int = 256):
    for i in range(0, len(windows), size):
        yield from model.forecast_batch(windows[i:i + size])
