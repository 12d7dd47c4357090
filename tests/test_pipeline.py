"""The KFP definition compiles to cluster YAML with the requested image and no local secrets."""

from __future__ import annotations

import yaml

from informerflow.pipeline import compile_pipeline

STEPS = ["preprocess-op", "train-op", "evaluate-op", "register-op", "deploy-op"]


def test_compiled_yaml_has_the_five_steps_in_order_with_the_image(tmp_path):
    path = compile_pipeline(tmp_path / "pipeline.yaml", image="registry.test/informerflow:9")
    spec = yaml.safe_load(path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STEPS)
    for before, after in zip(STEPS, STEPS[1:], strict=False):
        assert before in tasks[after].get("dependentTasks", []), (before, after)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.test/informerflow:9"}
    # Components must not pip-install kfp at start-up (no network needed on the cluster).
    commands = " ".join(" ".join(e["container"]["command"])
                        for e in spec["deploymentSpec"]["executors"].values())
    assert "pip install" not in commands


def test_no_value_of_the_compiling_environment_lands_in_the_yaml(tmp_path, monkeypatch):
    secrets = {
        "MLFLOW_TRACKING_TOKEN": "tok-5f1c2e9a77d04b",
        "AWS_SECRET_ACCESS_KEY": "aws-b3c1d0e8f2a94c",
        "MLFLOW_TRACKING_PASSWORD": "pw-0a9b8c7d6e5f41",
        "INFORMERFLOW_TOKEN": "bearer-77e1c0d2a3b4",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    text = compile_pipeline(tmp_path / "p.yaml").read_text()
    for value in secrets.values():
        assert value not in text
