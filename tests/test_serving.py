"""The model server, tested as a client sees it: a real server process on a loopback port.

One tiny Informer (d_model 8, untrained weights: serving does not care how good it is) is logged
to a temporary MLflow SQLite store and registered as ``tiny`` v1 with the ``champion`` alias; one
server with a bearer token serves it for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TOKEN = "test-token"
SEQ_LEN, PRED_LEN = 16, 4
START = datetime(2024, 1, 1)
STAMPS = [(START + timedelta(minutes=5 * i)).isoformat() for i in range(20)]
VALUES = [round(50 + 10 * np.sin(i / 5), 3) for i in range(20)]
FUTURE = ["2024-01-01T01:40:00", "2024-01-01T01:45:00", "2024-01-01T01:50:00",
          "2024-01-01T01:55:00"]


# -- fixtures ------------------------------------------------------------------------------------


def build_forecaster():
    """A tiny Informer forecaster over one column ``cpu`` at 5-minute steps."""
    import torch

    from informerflow.config import ModelConfig, RunConfig
    from informerflow.data.windows import Scaler
    from informerflow.forecaster import Forecaster, ForecastSpec
    from informerflow.model import build_model

    torch.manual_seed(0)
    cfg = RunConfig(model=ModelConfig(seq_len=SEQ_LEN, label_len=8, pred_len=PRED_LEN, d_model=8,
                                      n_heads=2, e_layers=1, d_layers=1, d_ff=16, freq="5min"))
    spec = ForecastSpec(config=cfg, input_cols=["cpu"], output_cols=["cpu"], target="cpu",
                        freq="5min")
    history = 50 + 10 * np.sin(np.arange(300) / 5.0)[:, None]
    return Forecaster(build_model(cfg.model), spec, Scaler.fit(history, ["cpu"]))


def register_tiny_model(home: Path) -> str:
    """Log and register the tiny model in ``home``'s SQLite store; returns the tracking URI."""
    import mlflow

    from informerflow.pyfunc import log_forecaster

    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.MlflowClient().create_experiment(
        "serving-tests", artifact_location=(home / "artifacts").as_uri())
    example = pd.DataFrame({"timestamp": STAMPS[-SEQ_LEN:], "cpu": VALUES[-SEQ_LEN:]})
    with mlflow.start_run(experiment_id=experiment):
        info = log_forecaster(build_forecaster(), example)
    version = mlflow.register_model(info.model_uri, "tiny").version
    mlflow.MlflowClient().set_registered_model_alias("tiny", "champion", version)
    return uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(model_uri: str, port: int, tracking_uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "informerflow.serving", "--model-uri", model_uri,
            "--port", str(port), "--tracking-uri", tracking_uri, *extra]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("home")
    return {"home": home, "tracking_uri": register_tiny_model(home)}


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, INFORMERFLOW_HOME=str(store["home"]), INFORMERFLOW_TOKEN=TOKEN)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            server_command("models:/tiny@champion", port, store["tracking_uri"]),
            stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, log_path)
        yield {"url": url, "port": port, "log": log_path}
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"server not ready in {timeout}s:\n{log_path.read_text()}")


# -- a client ------------------------------------------------------------------------------------


def call(url: str, path: str, body=None, token: str | None = TOKEN, raw: bytes | None = None):
    """(status, parsed JSON or text) for a GET (no body) or a JSON POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def v2(stamps=STAMPS, values=VALUES, datatype="FP32", **parameters) -> dict:
    body = {"inputs": [
        {"name": "timestamp", "datatype": "BYTES", "shape": [len(stamps)], "data": stamps},
        {"name": "cpu", "datatype": datatype, "shape": [len(values)], "data": values},
    ]}
    if parameters:
        body["parameters"] = parameters
    return body


def records(stamps=STAMPS, values=VALUES) -> list[dict]:
    return [{"timestamp": t, "cpu": v} for t, v in zip(stamps, values, strict=True)]


def v2_rows(answer: dict) -> list[dict]:
    outputs = {out["name"]: out["data"] for out in answer["outputs"]}
    return [dict(zip(outputs, row, strict=True)) for row in zip(*outputs.values(), strict=True)]


def error(url: str, path: str, body=None, **kwargs) -> str:
    status, answer = call(url, path, body, **kwargs)
    assert status == 400, answer
    return answer["error"]


# -- routes --------------------------------------------------------------------------------------


def test_health_metadata_and_listing(server):
    url = server["url"]
    assert call(url, "/v2/health/live", token=None) == (200, {"live": True})
    assert call(url, "/v2/health/ready", token=None) == (200, {"ready": True})
    assert call(url, "/v2/models") == (200, {"models": ["tiny"]})
    assert call(url, "/v2/models/tiny/ready") == (200, {"name": "tiny", "ready": True})
    status, meta = call(url, "/v2/models/tiny")
    assert status == 200
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "timestamp", "datatype": "BYTES", "shape": [-1]},
                              {"name": "cpu", "datatype": "FP64", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "timestamp", "datatype": "BYTES", "shape": [4]},
                               {"name": "cpu", "datatype": "FP64", "shape": [4]}]
    assert call(url, "/ping", token=None)[0] == 200


def test_v2_infer_answers_pred_len_rows_with_name_and_version(server):
    status, answer = call(server["url"], "/v2/models/tiny/infer", v2())
    assert status == 200
    assert (answer["model_name"], answer["model_version"]) == ("tiny", "1")
    assert [(o["name"], o["datatype"], o["shape"]) for o in answer["outputs"]] == [
        ("timestamp", "BYTES", [4]), ("cpu", "FP64", [4])]
    rows = v2_rows(answer)
    assert [r["timestamp"] for r in rows] == FUTURE
    assert all(np.isfinite(r["cpu"]) for r in rows)


def test_v1_v2_and_invocations_give_identical_answers(server):
    url = server["url"]
    expected = v2_rows(call(url, "/v2/models/tiny/infer", v2())[1])
    split = {"columns": ["timestamp", "cpu"], "data": [list(r.values()) for r in records()]}
    bodies = {
        "/v1/models/tiny:predict": {"instances": records()},
        "/invocations": {"dataframe_split": split},
    }
    answers = [call(url, path, body) for path, body in bodies.items()]
    answers.append(call(url, "/v1/models/tiny:predict", {"inputs": records()}))
    for key, payload in [("dataframe_records", records()), ("instances", records()),
                         ("inputs", {"timestamp": STAMPS, "cpu": VALUES}),
                         ("instances", {"timestamp": STAMPS, "cpu": VALUES})]:
        answers.append(call(url, "/invocations", {key: payload}))
    for status, answer in answers:
        assert status == 200, answer
        assert answer["predictions"] == expected
        assert (answer["model_name"], answer["model_version"]) == ("tiny", "1")


def test_integer_values_are_cast_to_float(server):
    ints = [int(v) for v in VALUES]
    _, as_ints = call(server["url"], "/v2/models/tiny/infer", v2(values=ints, datatype="INT64"))
    _, as_floats = call(server["url"], "/v1/models/tiny:predict",
                        {"instances": records(values=[float(v) for v in ints])})
    assert v2_rows(as_ints) == as_floats["predictions"]


def test_same_request_twice_gives_the_same_numbers(server):
    first = call(server["url"], "/v2/models/tiny/infer", v2())[1]
    second = call(server["url"], "/v2/models/tiny/infer", v2())[1]
    assert v2_rows(first) == v2_rows(second)


def test_only_the_last_seq_len_rows_count(server):
    full = call(server["url"], "/v1/models/tiny:predict", {"instances": records()})[1]
    tail = call(server["url"], "/v1/models/tiny:predict",
                {"instances": records()[-SEQ_LEN:]})[1]
    assert full["predictions"] == tail["predictions"]


def test_horizon_trims_the_answer_on_every_route(server):
    url = server["url"]
    full = v2_rows(call(url, "/v2/models/tiny/infer", v2())[1])
    assert v2_rows(call(url, "/v2/models/tiny/infer", v2(horizon=2))[1]) == full[:2]
    v1 = call(url, "/v1/models/tiny:predict", {"instances": records(), "horizon": 3})[1]
    assert v1["predictions"] == full[:3]
    mlflow_style = {"dataframe_records": records(), "params": {"horizon": 1}}
    assert call(url, "/invocations", mlflow_style)[1]["predictions"] == full[:1]


def test_concurrent_requests_all_get_their_own_answer(server):
    url = server["url"]
    shifted = [[v + k for v in VALUES] for k in range(6)]
    expected = [call(url, "/v1/models/tiny:predict", {"instances": records(values=s)})[1]
                for s in shifted]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(
            lambda s: call(url, "/v1/models/tiny:predict", {"instances": records(values=s)})[1],
            shifted))
    for got, want in zip(answers, expected, strict=True):
        # A batched forward may round differently in the last bits than a single one.
        np.testing.assert_allclose([p["cpu"] for p in got["predictions"]],
                                   [p["cpu"] for p in want["predictions"]], rtol=1e-6)
        assert [p["timestamp"] for p in got["predictions"]] == FUTURE


def test_metrics_endpoint_reports_kserve_and_informerflow_series(server):
    call(server["url"], "/v2/models/tiny/infer", v2())
    status, text = call(server["url"], "/metrics")
    assert status == 200
    assert 'request_predict_seconds_count{model_name="tiny"}' in text
    assert 'informerflow_batch_size_count{model_name="tiny"}' in text


# -- auth ----------------------------------------------------------------------------------------


def test_requests_without_the_token_get_401(server):
    url = server["url"]
    for token in (None, "wrong"):
        status, answer = call(url, "/v2/models/tiny/infer", v2(), token=token)
        assert status == 401
        assert answer == {"error": "missing or wrong bearer token: send "
                                   "'Authorization: Bearer <token>'"}
    assert call(url, "/metrics", token=None)[0] == 401
    assert call(url, "/invocations", {"instances": records()}, token=None)[0] == 401


# -- validation errors ---------------------------------------------------------------------------


def test_too_few_rows(server):
    assert error(server["url"], "/v1/models/tiny:predict", {"instances": records()[:5]}) == (
        "too few rows: the model needs the last 16 rows, got 5")


def test_null_value_names_its_row(server):
    values = list(VALUES)
    values[18] = None
    assert error(server["url"], "/v2/models/tiny/infer", v2(values=values)) == (
        "column 'cpu' has a missing or non-finite value at row 18 (None); every value must be "
        "a finite number")


def test_unparseable_timestamp(server):
    stamps = list(STAMPS)
    stamps[17] = "yesterday"
    assert error(server["url"], "/v1/models/tiny:predict", {"instances": records(stamps)}) == (
        "unparseable timestamp at row 17: 'yesterday' (send ISO-8601 strings such as "
        "2024-01-31T12:00:00)")


def test_irregular_timestamps(server):
    stamps = list(STAMPS)
    stamps[17] = "2024-01-01T09:00:00"
    assert error(server["url"], "/v2/models/tiny/infer", v2(stamps)) == (
        "irregular timestamps: row 17 is 2024-01-01 09:00:00, expected 2024-01-01 01:25:00 "
        "(the model's frequency is '5min'; send consecutive stamps with no gaps)")


def test_number_as_timestamp(server):
    stamps = list(STAMPS)
    stamps[3] = 1704067200
    body = {"inputs": {"timestamp": stamps, "cpu": VALUES}}
    assert error(server["url"], "/invocations", body) == (
        "'inputs' column 'timestamp' row 3: timestamps must be ISO-8601 strings such as "
        "2024-01-31T12:00:00, got 1704067200 (int)")


def test_wrong_columns_are_all_named(server):
    body = {"instances": [{"timestamp": r["timestamp"], "mem": r["cpu"]} for r in records()]}
    assert error(server["url"], "/v1/models/tiny:predict", body) == (
        "missing column(s) 'cpu'; unexpected column(s) 'mem': the model takes timestamp, cpu")
    body = v2()
    body["inputs"][1]["name"] = "mem"
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "missing input(s) 'cpu'; unexpected input(s) 'mem': the model takes timestamp, cpu")


def test_shape_must_match_data_length(server):
    body = v2()
    body["inputs"][1]["shape"] = [21]
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "input 'cpu' declares shape [21] (21 values) but its data holds 20 values")
    body["inputs"][1]["shape"] = [4, 5]
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "input 'cpu' has shape [4, 5]; send one value per row, shape [N] or [N, 1]")


def test_inputs_of_different_lengths(server):
    body = v2(values=VALUES[:19])
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "inputs must all have one value per row; lengths differ: timestamp 20, cpu 19")


def test_wrong_datatypes(server):
    body = v2(datatype="BOOL")
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "input 'cpu' must have a numeric datatype (FP32, FP64, INT16, INT32, INT64, INT8, UINT16, "
        "UINT32, UINT64, UINT8), got BOOL")
    body = v2()
    body["inputs"][0]["datatype"] = "FP32"
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "input 'timestamp' must have datatype BYTES (strings), got FP32")
    values = list(VALUES)
    values[2] = "high"
    body = {"instances": records(values=values)}
    assert error(server["url"], "/v1/models/tiny:predict", body) == (
        "'instances' column 'cpu' row 2: expected a number, got 'high' (str)")


def test_malformed_v2_body(server):
    body = {"inputs": [{"name": "timestamp", "shape": [20], "data": STAMPS}]}
    assert error(server["url"], "/v2/models/tiny/infer", body) == (
        "malformed inference request: inputs.0.datatype: Field required")


def test_legacy_body_without_an_accepted_key(server):
    assert error(server["url"], "/invocations", {"records": records()}) == (
        "/invocations body has none of the accepted keys dataframe_split, dataframe_records, "
        "instances, inputs (got keys: records)")
    assert error(server["url"], "/v1/models/tiny:predict", {"rows": []}) == (
        "V1 predict body has none of the accepted keys instances, inputs (got keys: rows)")
    assert error(server["url"], "/invocations", raw=b"not json").startswith(
        "/invocations body is not valid JSON: ")


def test_split_row_of_the_wrong_length(server):
    body = {"dataframe_split": {"columns": ["timestamp", "cpu"], "data": [[STAMPS[0]]]}}
    assert error(server["url"], "/invocations", body) == (
        "dataframe_split.data row 0 has 1 values but there are 2 columns (timestamp, cpu)")


@pytest.mark.parametrize(("horizon", "message"), [
    (0, "parameters.horizon must be from 1 to 4 (the model's pred_len), got 0"),
    (5, "parameters.horizon must be from 1 to 4 (the model's pred_len), got 5"),
    ("2", "parameters.horizon must be a whole number from 1 to 4 (the model's pred_len), "
          "got '2'"),
])
def test_horizon_out_of_range(server, horizon, message):
    assert error(server["url"], "/v2/models/tiny/infer", v2(horizon=horizon)) == message


def test_unknown_model_is_404(server):
    status, answer = call(server["url"], "/v2/models/other/infer", v2())
    assert (status, answer) == (404, {"error": "Model with name other does not exist."})


def test_rejections_are_logged_in_one_line(server):
    status, answer = call(server["url"], "/v1/models/tiny:predict", {"instances": "x"})
    assert status == 400
    assert answer["error"].startswith("'instances' must be a list of records like")
    time.sleep(0.2)  # the server's log line lands after the answer
    lines = server["log"].read_text().splitlines()
    [logged] = [line for line in lines if "'instances' must be a list of records" in line]
    assert "INFO informerflow.serving.server: rejected request (400): " in logged
    assert "Traceback" not in "\n".join(lines[lines.index(logged):])


def test_binds_loopback_only_by_default(server):
    # 127.0.0.2 is loopback too: a server bound to 0.0.0.0 would accept there, ours must not.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.2", server["port"])) != 0


# -- start-up failures (the entry point run in-process: same code, no minute of imports) --------


def test_tampered_model_is_refused(store, tmp_path, caplog):
    import mlflow

    from informerflow.serving.__main__ import main

    mlflow.set_tracking_uri(store["tracking_uri"])
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/tiny/1", dst_path=str(tmp_path)))
    weights = model_dir / "artifacts" / "forecaster" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))

    port = free_port()
    code = main(["--model-uri", str(model_dir), "--port", str(port),
                 "--tracking-uri", store["tracking_uri"]])
    assert code == 3
    assert caplog.records[-1].levelname == "ERROR"
    assert caplog.records[-1].getMessage() == (
        f"cannot serve {model_dir}: {weights.parent}: weights.pt changed since the model "
        "was logged (sha256 mismatch); refusing to load it. Re-download the model from the "
        "registry.")
    with socket.socket() as again:  # the port was let go
        again.bind(("127.0.0.1", port))


def test_port_in_use_is_refused(server, caplog):
    from informerflow.serving.__main__ import main

    code = main(["--model-uri", "models:/tiny@champion", "--port", str(server["port"])])
    assert code == 4
    assert caplog.records[-1].getMessage() == (
        f"cannot listen on 127.0.0.1:{server['port']}: Address already in use; port "
        f"{server['port']} is probably in use, pick another with --port")


# -- in-process pieces ---------------------------------------------------------------------------


def test_micro_batcher_shares_one_call_and_isolates_a_bad_window():
    from informerflow.errors import RequestError
    from informerflow.serving.server import MicroBatcher

    forecaster = build_forecaster()
    frame = pd.DataFrame({"timestamp": STAMPS, "cpu": VALUES})
    sizes: list[int] = []
    batcher = MicroBatcher(forecaster.forecast_batch, max_batch=3, max_wait_s=5.0,
                           on_batch=sizes.append)

    async def three(frames):
        return await asyncio.gather(*(batcher.submit(f) for f in frames),
                                    return_exceptions=True)

    good = asyncio.run(three([frame, frame.assign(cpu=frame.cpu + 1), frame]))
    assert sizes == [3]
    single = forecaster.forecast(frame)
    pd.testing.assert_frame_equal(good[0], single, rtol=1e-6)
    pd.testing.assert_frame_equal(good[2], good[0])

    sizes.clear()
    mixed = asyncio.run(three([frame, frame.head(5), frame]))
    assert sizes == [3, 1, 1, 1]  # the shared call failed, so each window ran alone
    assert isinstance(mixed[1], RequestError)
    assert str(mixed[1]) == "too few rows: the model needs the last 16 rows, got 5"
    pd.testing.assert_frame_equal(mixed[0], single)


def test_internal_errors_answer_without_details():
    from informerflow.serving.server import _fault

    response = asyncio.run(_fault(None, KeyError("secret detail")))
    assert response.status_code == 500
    assert json.loads(response.body) == {
        "error": "internal server error (KeyError); see the server log"}


def test_long_format_model_forecasts_each_series(tmp_path):
    import dataclasses

    from informerflow.serving.server import ForecastModel

    forecaster = build_forecaster()
    forecaster.spec = dataclasses.replace(forecaster.spec, id_col="pod")
    model = ForecastModel("long", forecaster, version="7")
    rows = [{"pod": pod, **r} for pod in ("a", "b") for r in records()]
    body = {"instances": rows, "horizon": 2}

    answer, _ = asyncio.run(model(body, headers={}))
    assert (answer["model_name"], answer["model_version"]) == ("long", "7")
    assert [(p["pod"], p["timestamp"]) for p in answer["predictions"]] == [
        ("a", FUTURE[0]), ("a", FUTURE[1]), ("b", FUTURE[0]), ("b", FUTURE[1])]
    assert answer["predictions"][0]["cpu"] == answer["predictions"][2]["cpu"]  # same window

    v2_answer, _ = asyncio.run(model(v2_request(rows), headers={}))
    outputs = {o.name: o.data for o in v2_answer.outputs}
    assert outputs["pod"] == ["a"] * 4 + ["b"] * 4
    assert outputs["cpu"][:2] == [p["cpu"] for p in answer["predictions"][:2]]


def v2_request(rows: list[dict]):
    from kserve.protocol.infer_type import InferInput, InferRequest

    inputs = [InferInput(name, [len(rows)], "BYTES" if name != "cpu" else "FP64",
                         [r[name] for r in rows]) for name in ("timestamp", "pod", "cpu")]
    return InferRequest("long", inputs)


def test_column_shaped_v2_inputs_are_accepted(server):
    body = v2()
    body["inputs"][1]["shape"] = [20, 1]
    body["inputs"][1]["data"] = [[v] for v in VALUES]
    status, answer = call(server["url"], "/v2/models/tiny/infer", body)
    assert status == 200
    assert v2_rows(answer) == v2_rows(call(server["url"], "/v2/models/tiny/infer", v2())[1])


def test_batcher_settings_are_checked():
    from informerflow.errors import ConfigError
    from informerflow.serving.server import MicroBatcher

    with pytest.raises(ConfigError, match=r"max_batch must be 1 or more \(--max-batch\), got 0"):
        MicroBatcher(list, max_batch=0)
    with pytest.raises(ConfigError, match=r"max_wait must be 0 or more \(--max-wait-ms\), "
                                          r"got -0\.001s"):
        MicroBatcher(list, max_wait_s=-0.001)
