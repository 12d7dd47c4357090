"""The registry alias policy, against a real MLflow SQLite store in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from informerflow import state, tracking
from informerflow.errors import ConfigError

SHA_A, SHA_B = "a" * 64, "b" * 64


def logged_run(experiment_id: str, test_mae: float, sha: str = SHA_A, split: str = "0.7/0.1"):
    """A finished run with the tags and metric register() reads, and a one-file 'model'."""
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({tracking.DATA_SHA_TAG: sha, tracking.SPLIT_TAG: split})
        mlflow.log_metric("test_mae", test_mae)
        mlflow.log_dict({"weights": [1, 2, 3]}, "model/x.json")
    return run.info.run_id


def register(experiment_id: str, name: str, test_mae: float, **tags: str):
    run_id = logged_run(experiment_id, test_mae, **tags)
    return tracking.register(run_id, f"runs:/{run_id}/model", name, test_mae)


def champion_version(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, tracking.CHAMPION).version)


@pytest.fixture
def experiment(mlflow_store: str) -> str:
    assert tracking.configure() == mlflow_store
    return tracking.ensure_experiment("unit")


def test_configure_defaults_to_the_state_dir_store(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(state.ENV_HOME, str(tmp_path / "st"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        uri = tracking.configure()
        assert uri == f"sqlite:///{tmp_path / 'st' / 'mlflow.db'}"
        assert mlflow.get_tracking_uri() == uri
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_ensure_experiment_is_idempotent_and_keeps_artifacts_in_the_state_dir(
    experiment: str, tmp_path: Path,
) -> None:
    assert tracking.ensure_experiment("unit") == experiment
    location = MlflowClient().get_experiment(experiment).artifact_location
    assert location == (tmp_path / "home" / "mlartifacts" / "unit").as_uri()


def test_first_version_becomes_champion(experiment: str) -> None:
    reg = register(experiment, "m", 0.5)
    assert (reg.name, reg.version, reg.alias) == ("m", "1", tracking.CHAMPION)
    assert reg.previous_champion is None
    assert reg.reason == "first version for this model"
    assert champion_version("m") == "1"
    tags = MlflowClient().get_model_version("m", "1").tags
    assert tags["alias_reason"] == "first version for this model"


def test_worse_version_on_the_same_data_is_challenger(experiment: str) -> None:
    register(experiment, "m", 0.5)
    reg = register(experiment, "m", 0.7)
    assert (reg.version, reg.alias, str(reg.previous_champion)) == ("2", tracking.CHALLENGER, "1")
    assert reg.reason == "test MAE 0.7 does not beat champion v1 (0.5)"
    assert champion_version("m") == "1"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("m", tracking.CHALLENGER).version) == "2"


def test_equal_mae_does_not_replace_the_champion(experiment: str) -> None:
    register(experiment, "m", 0.5)
    assert register(experiment, "m", 0.5).alias == tracking.CHALLENGER
    assert champion_version("m") == "1"


def test_better_version_on_the_same_data_takes_the_champion_alias(experiment: str) -> None:
    register(experiment, "m", 0.5)
    register(experiment, "m", 0.7)
    reg = register(experiment, "m", 0.25)
    assert (reg.version, reg.alias, str(reg.previous_champion)) == ("3", tracking.CHAMPION, "1")
    assert reg.reason == "test MAE 0.25 beats champion v1 (0.5)"
    assert champion_version("m") == "3"


def test_version_on_other_data_is_challenger_even_when_better(experiment: str) -> None:
    register(experiment, "m", 0.5)
    reg = register(experiment, "m", 0.01, sha=SHA_B)
    assert (reg.alias, str(reg.previous_champion)) == (tracking.CHALLENGER, "1")
    assert "other data" in reg.reason
    assert reg.reason == ("champion v1 was evaluated on other data or another split; "
                          "promote explicitly to replace it")
    assert champion_version("m") == "1"


def test_version_on_another_split_is_challenger(experiment: str) -> None:
    register(experiment, "m", 0.5)
    reg = register(experiment, "m", 0.01, split="0.6/0.2")
    assert reg.alias == tracking.CHALLENGER
    assert "another split" in reg.reason
    assert champion_version("m") == "1"


def test_previous_champion_is_a_string_like_version(experiment: str) -> None:
    register(experiment, "m", 0.5)
    reg = register(experiment, "m", 0.7)
    assert reg.previous_champion == "1"
    assert isinstance(reg.previous_champion, str)


def test_code_version_names_the_package_version() -> None:
    tags = tracking.code_version()
    from informerflow import __version__

    assert tags["code.version"] == __version__
    if "code.git_commit" in tags:
        assert len(tags["code.git_commit"]) == 40
        assert tags["code.git_dirty"] in ("true", "false")


def test_list_versions_promote_and_compare(experiment: str) -> None:
    first = register(experiment, "m", 0.5)
    second = register(experiment, "m", 0.7)  # worse: challenger
    rows = tracking.list_versions("m")
    assert [(r.version, r.aliases, r.test_mae) for r in rows] == [
        ("2", [tracking.CHALLENGER], 0.7), ("1", [tracking.CHAMPION], 0.5)]

    assert tracking.promote("m", "2") == "1"
    assert champion_version("m") == "2"
    with pytest.raises(ConfigError, match="model 'm' has no version 9"):
        tracking.promote("m", "9")

    run_a = MlflowClient().get_model_version("m", first.version).run_id
    run_b = MlflowClient().get_model_version("m", second.version).run_id
    table = tracking.compare_runs([run_a, run_b])
    assert table["metrics"]["test_mae"] == {run_a: "0.5", run_b: "0.7"}
    with pytest.raises(ConfigError, match="no run with id 'nope'"):
        tracking.compare_runs(["nope"])


def test_redact_hides_passwords_only() -> None:
    assert tracking.redact("postgresql://ml:s3cr3t@db:5432/mlflow") == (
        "postgresql://ml:***@db:5432/mlflow")
    assert tracking.redact("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
