"""Where informerflow keeps its state on this machine.

One directory holds everything a local run leaves behind: the MLflow SQLite store and artifacts,
preprocessed data, pipeline outputs and the records of running endpoints. It defaults to
``./.informerflow`` so a project's runs stay with the project, and ``INFORMERFLOW_HOME`` (or the
CLI's ``--state-dir``) moves it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "INFORMERFLOW_HOME"
DEFAULT_DIRNAME = ".informerflow"


def state_dir() -> Path:
    """The state directory, created if missing, as an absolute path."""
    path = Path(os.environ.get(ENV_HOME) or DEFAULT_DIRNAME).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set (a team server), else the SQLite store in the state dir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def artifact_root() -> str:
    """Where runs of a local store keep their artifacts (used only when creating experiments)."""
    return (state_dir() / "mlartifacts").as_uri()
