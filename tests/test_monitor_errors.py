"""What `informerflow monitor` says about a prediction log or actuals file it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from informerflow.errors import DataError
from informerflow.monitoring.monitor import run_monitor


@pytest.fixture
def actuals(tmp_path: Path) -> Path:
    path = tmp_path / "actuals.csv"
    path.write_text("timestamp,cpu\n2024-01-01T00:00:00,1.0\n")
    return path


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path, actuals: Path, mlflow_store) -> None:
    log = tmp_path / "notes.db"
    log.write_text("these are my notes, not a database\n" * 20)
    with pytest.raises(DataError, match=rf"{log} is not an informerflow prediction log"):
        run_monitor(actuals, log_path=log)


def test_a_relative_log_path_is_resolved_against_the_working_dir(
        tmp_path: Path, actuals: Path, mlflow_store, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"no prediction log at {tmp_path / 'missing.db'}"):
        run_monitor(actuals, log_path="missing.db")


def test_a_directory_is_not_a_log(tmp_path: Path, actuals: Path, mlflow_store) -> None:
    with pytest.raises(DataError, match=rf"{tmp_path} is a directory, not a prediction log"):
        run_monitor(actuals, log_path=tmp_path)


@pytest.mark.parametrize("name", ["nothing.csv", "."])
def test_a_missing_actuals_file_names_the_option(tmp_path: Path, name: str, mlflow_store) -> None:
    with pytest.raises(DataError, match="--actuals"):
        run_monitor(tmp_path / name if name != "." else tmp_path)
