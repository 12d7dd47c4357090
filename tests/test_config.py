"""RunConfig: every invalid value is named with its allowed range, and the config round-trips."""

from __future__ import annotations

import json
import re

import pytest

from informerflow.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from informerflow.errors import ConfigError


def run_config(**sections: dict) -> RunConfig:
    return RunConfig(
        data=DataConfig(**sections.get("data", {})),
        model=ModelConfig(**sections.get("model", {})),
        train=TrainConfig(**sections.get("train", {})),
    )


def test_defaults_are_valid_and_validate_returns_self() -> None:
    cfg = RunConfig()
    assert cfg.validate() is cfg


def test_label_len_beyond_seq_len_names_both_values() -> None:
    cfg = run_config(model={"seq_len": 12, "label_len": 48})
    with pytest.raises(ConfigError, match=re.escape(
        "model.label_len (48) must not exceed model.seq_len (12): "
        "the decoder's known steps are the tail of the encoder window"
    )):
        cfg.validate()


def test_label_len_equal_to_seq_len_and_zero_are_allowed() -> None:
    run_config(model={"seq_len": 12, "label_len": 12}).validate()
    run_config(model={"seq_len": 12, "label_len": 0, "pred_len": 1}).validate()


@pytest.mark.parametrize(("name", "value"), [("seq_len", 0), ("pred_len", -1), ("d_ff", 0),
                                             ("e_layers", 0), ("factor", -2)])
def test_non_positive_model_lengths_are_rejected(name: str, value: int) -> None:
    cfg = run_config(model={name: value})
    with pytest.raises(ConfigError, match=re.escape(f"model.{name} must be positive, got {value}")):
        cfg.validate()


def test_negative_label_len_is_rejected() -> None:
    with pytest.raises(ConfigError, match=re.escape("model.label_len must be 0 or more, got -1")):
        run_config(model={"label_len": -1}).validate()


@pytest.mark.parametrize(("name", "value"), [("epochs", 0), ("batch_size", -4),
                                             ("learning_rate", 0.0)])
def test_non_positive_train_values_are_rejected(name: str, value: float) -> None:
    cfg = run_config(train={name: value})
    with pytest.raises(ConfigError, match=re.escape(f"train.{name} must be positive, got {value}")):
        cfg.validate()


def test_d_model_must_divide_by_n_heads() -> None:
    cfg = run_config(model={"d_model": 10, "n_heads": 4})
    with pytest.raises(ConfigError, match=re.escape(
        "model.d_model (10) must be divisible by model.n_heads (4)"
    )):
        cfg.validate()


@pytest.mark.parametrize(("section", "name", "value", "allowed"), [
    ("data", "features", "X", "S, M, MS"),
    ("data", "gaps", "drop", "error, interpolate, ffill"),
    ("data", "duplicates", "first", "error, last, mean"),
    ("model", "attn", "sparse", "prob, full"),
    ("model", "embed", "onehot", "timeF, fixed, learned"),
    ("model", "activation", "tanh", "gelu, relu"),
    ("train", "lr_schedule", "step", "halve, cosine, constant"),
])
def test_bad_choice_lists_the_allowed_values(section: str, name: str, value: str,
                                             allowed: str) -> None:
    cfg = run_config(**{section: {name: value}})
    with pytest.raises(ConfigError, match=re.escape(
        f"{section}.{name} must be one of {allowed}; got {value!r}"
    )):
        cfg.validate()


def test_split_fractions_must_leave_a_test_split() -> None:
    cfg = run_config(data={"train_frac": 0.8, "val_frac": 0.2})
    with pytest.raises(ConfigError, match=re.escape(
        "data.train_frac (0.8) and data.val_frac (0.2) must be in (0, 1) and sum to less than 1"
    )):
        cfg.validate()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": {"dropout": 1.0}}, "model.dropout must be in [0, 1), got 1.0"),
    ({"model": {"stack": (2, 0)}}, "model.stack must list encoder depths of 1 or more, got (2, 0)"),
    ({"model": {"stack": ()}}, "model.stack must list encoder depths of 1 or more, got ()"),
    ({"train": {"patience": 0}}, "train.patience must be 1 or more, got 0"),
    ({"train": {"clip_grad": -1.0}}, "train.clip_grad must be 0 (off) or positive, got -1.0"),
    ({"data": {"max_gap_steps": -1}}, "data.max_gap_steps must be 0 or more, got -1"),
])
def test_other_ranges_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_config(**kwargs).validate()


def test_port_out_of_range() -> None:
    with pytest.raises(ConfigError, match=re.escape("port must be in 1..65535, got 70000")):
        RunConfig(port=70000).validate()


def test_several_problems_are_reported_together() -> None:
    cfg = run_config(
        model={"seq_len": 12, "label_len": 48, "d_model": 10, "n_heads": 4},
        train={"epochs": 0, "lr_schedule": "step"},
    )
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert lines[1:] == [
        "  - train.epochs must be positive, got 0",
        "  - model.label_len (48) must not exceed model.seq_len (12): "
        "the decoder's known steps are the tail of the encoder window",
        "  - model.d_model (10) must be divisible by model.n_heads (4)",
        "  - train.lr_schedule must be one of halve, cosine, constant; got 'step'",
    ]


def test_dict_round_trip_keeps_every_value_and_the_stack_tuple() -> None:
    cfg = run_config(
        data={"path": "x.csv", "features": "MS", "target": "load", "val_frac": 0.15},
        model={"seq_len": 24, "label_len": 12, "stack": (3, 2, 1), "attn": "full"},
        train={"epochs": 2, "lr_schedule": "cosine", "max_train_windows": 50},
    )
    cfg.experiment, cfg.port, cfg.deploy = "exp", 9000, False

    via_json = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert via_json == cfg
    assert via_json.model.stack == (3, 2, 1)
    assert isinstance(via_json.model.stack, tuple)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_from_dict_of_an_empty_dict_gives_defaults() -> None:
    assert RunConfig.from_dict({}) == RunConfig()


def test_flat_keys_are_section_dot_name_plus_top_level() -> None:
    flat = RunConfig().flat()
    assert flat["model.seq_len"] == 96
    assert flat["model.label_len"] == 48
    assert flat["train.lr_schedule"] == "halve"
    assert flat["data.target"] == "cpu_utilization"
    assert flat["port"] == 8080
    assert flat["experiment"] is None
    expected = (
        {f"data.{k}" for k in DataConfig.__dataclass_fields__}
        | {f"model.{k}" for k in ModelConfig.__dataclass_fields__}
        | {f"train.{k}" for k in TrainConfig.__dataclass_fields__}
        | {"experiment", "model_name", "endpoint", "port", "deploy"}
    )
    assert set(flat) == expected


@pytest.mark.parametrize("value", [0, -1])
def test_max_train_windows_must_be_positive_or_none(value: int) -> None:
    with pytest.raises(ConfigError, match=re.escape("train.max_train_windows")):
        run_config(train={"max_train_windows": value}).validate()
