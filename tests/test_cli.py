"""CLI behaviour on bad input: one readable message, exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _paths import SHARED

CASES = SHARED / "cases" / "ingest"


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["INFORMERFLOW_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "informerflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=home)


def test_label_len_above_seq_len_is_refused_before_any_work(tmp_path):
    result = _cli(["run", "--seq-len", "12", "--label-len", "48"], tmp_path)
    assert result.returncode == 2
    assert "model.label_len (48) must not exceed model.seq_len (12)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "pipeline_runs").exists()


def test_missing_file_names_it(tmp_path):
    result = _cli(["run", "--data", str(tmp_path / "nope.csv")], tmp_path)
    assert result.returncode == 2
    assert "nope.csv" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_nan_cells_error_names_column_count_and_first_stamp(tmp_path):
    result = _cli(["run", "--data", str(CASES / "nan_cells.csv")], tmp_path)
    assert result.returncode == 2
    assert "cpu_utilization" in result.stderr and "5" in result.stderr
    assert "1970-01-01 20:00" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_too_short_file_names_the_split(tmp_path):
    result = _cli(["run", "--data", str(CASES / "too_short.csv")], tmp_path)
    assert result.returncode == 2
    assert "split has" in result.stderr and "needs at least" in result.stderr


def test_validate_reports_the_bundled_gap_repair(tmp_path):
    bundled = (Path(__file__).resolve().parents[1] / "src" / "informerflow" / "datasets"
               / "processed_data.csv.gz")
    result = _cli(["validate", str(bundled)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "18720 rows" in result.stdout and "frequency min" in result.stdout
    assert "1970-01-06 04:08:00" in result.stdout
