"""The MLflow face of a Forecaster: a pyfunc model logged from code, never pickled.

MLflow's default for a ``PythonModel`` instance is to cloudpickle it, and loading such a model
unpickles whatever the artifact store holds. We log "from code" instead: the model is defined by
``pyfunc_entry.py``, the weights travel as a state dict checked against recorded hashes, and the
``informerflow`` package itself is copied into the model, so the model loads in any environment
with the pinned requirements installed, informerflow included or not.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature

from informerflow.errors import RequestError
from informerflow.forecaster import TIME, Forecaster

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
ENTRY = PACKAGE_DIR / "pyfunc_entry.py"
ARTIFACT = "forecaster"

# Exactly what the model needs at load time; the versions are the ones the project pins.
PIP_REQUIREMENTS = [
    "torch==2.13.0",
    "mlflow==3.17.2",
    "pandas==2.3.3",
    "numpy==2.4.6",
]


class InformerPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: DataFrame of the last ``seq_len`` rows in, ``pred_len`` rows out."""

    forecaster: Forecaster

    def load_context(self, context) -> None:
        self.forecaster = Forecaster.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        out = self.forecaster.forecast(model_input)
        horizon = (params or {}).get("horizon")
        if horizon is None:
            return out
        f = self.forecaster
        return trim_horizon(out, int(horizon), f.pred_len, f.spec.id_col)


def trim_horizon(
    out: pd.DataFrame, horizon: int, pred_len: int, id_col: str | None
) -> pd.DataFrame:
    """Keep the first ``horizon`` steps of each series' forecast."""
    if not 1 <= horizon <= pred_len:
        raise RequestError(
            f"horizon must be in 1..{pred_len} (the model's pred_len), got {horizon}"
        )
    if id_col and id_col in out.columns:
        return out.groupby(id_col, sort=False).head(horizon).reset_index(drop=True)
    return out.head(horizon)


def signature_for(forecaster: Forecaster, example: pd.DataFrame) -> ModelSignature:
    output = forecaster.forecast(example)
    return infer_signature(example, output, params={"horizon": forecaster.pred_len})


def input_example(forecaster: Forecaster, frame: pd.DataFrame) -> pd.DataFrame:
    """The last ``seq_len`` rows of ``frame`` as a request: ISO stamps plus the input columns."""
    tail = frame.iloc[len(frame) - forecaster.seq_len:]
    example = tail[forecaster.input_cols].reset_index(drop=True)
    example.insert(0, TIME, pd.DatetimeIndex(tail["date"]).strftime("%Y-%m-%dT%H:%M:%S"))
    return example


def log_forecaster(forecaster: Forecaster, example: pd.DataFrame, name: str = "model"):
    """Log ``forecaster`` to the active run as a pyfunc model; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        artifact_dir = forecaster.save(Path(tmp) / ARTIFACT)
        try:
            signature = signature_for(forecaster, example)
        except Exception as exc:  # the model is still useful without a signature
            log.warning("could not infer a model signature (%s); logging without one", exc)
            mlflow.set_tag("signature_warning", str(exc)[:500])
            signature = None
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY),
            artifacts={ARTIFACT: str(artifact_dir)},
            code_paths=[str(PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
        )


def load_forecaster(model_uri: str) -> Forecaster:
    """The Forecaster inside an MLflow model (``models:/name@alias``, ``runs:/...``, a path)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().forecaster
