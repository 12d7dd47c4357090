"""The model server: one Forecaster behind KServe's REST data plane.

Built on ``kserve.ModelServer`` and ``kserve.Model`` so the V1 and V2 (Open Inference Protocol)
routes, health checks, model metadata and Prometheus metrics are KServe's own. On top of them:

* ``POST /invocations`` (and ``GET /ping``, ``GET /health``) in MLflow's scoring format;
* a loopback bind by default: KServe's REST server hard-codes ``0.0.0.0``, so the socket is bound
  here (on ``host``, default 127.0.0.1) and handed to uvicorn; gRPC is left off;
* optional bearer-token auth for everything but the health checks;
* request errors (``RequestError``, KServe's ``InvalidInput``, malformed V2 bodies) answered with
  400 and a message naming the problem; anything else is a logged 500 without a stack trace;
* micro-batching: concurrent requests wait up to ``max_wait_ms`` to share one model call;
* the prediction log: every answered forecast is appended to a SQLite file (see
  ``monitoring.predlog``), and ``GET /dashboard`` (plus ``/dashboard/data``) shows the latest
  figures of ``informerflow monitor`` next to the newest forecasts;
* Prometheus metrics beyond KServe's: forecasts served, the model version, prediction-log losses
  and the latest monitoring figures.

Life cycle of :func:`serve`: bind the port -> load the model (hashes checked) -> serve.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import orjson
import pandas as pd
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse, Response
from kserve import Model, ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import RESTServer
from mlflow import MlflowClient
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from informerflow.errors import (
    ConfigError,
    DeploymentError,
    InformerflowError,
    ModelLoadError,
    RequestError,
    http_status,
)
from informerflow.forecaster import Forecaster
from informerflow.monitoring import dashboard, predlog, status
from informerflow.serving import protocol
from informerflow.serving.endpoints import bind_listener
from informerflow.serving.protocol import ForecastRequest, InvocationsBody, Schema

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_NAME = "informer"
TOKEN_ENV = "INFORMERFLOW_TOKEN"
# Probes (kubelet, `start_endpoint`) must work without the token; they reveal nothing.
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/ping", "/health"})
LOG_OFF = "off"  # --prediction-log value that turns the log off

BATCH_SIZE = Histogram(
    "informerflow_batch_size",
    "Windows forecast together in one model call",
    ["model_name"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
REJECTED = Counter(
    "informerflow_rejected_requests_total",
    "Requests answered with a 4xx status by informerflow's error handlers",
    ["status"],
)
FAILED = Counter(
    "informerflow_failed_requests_total",
    "Requests answered with a 5xx status because of a fault in the server",
    ["status"],
)
FORECASTS = Counter(
    "informerflow_forecasts_total",
    "Forecasts answered (one per series per request)",
    ["model_name", "model_version"],
)
MODEL_INFO = Gauge(
    "informerflow_model_info",
    "The model version this server serves (value 1)",
    ["model_name", "model_version", "seq_len", "pred_len", "freq"],
)


# -- micro-batching ------------------------------------------------------------------------------


class MicroBatcher:
    """Gathers windows from concurrent requests into one ``forecast_batch`` call.

    The first waiting window opens a batch; it closes after ``max_wait_s`` or at ``max_batch``
    windows. Batches run one at a time on a single worker thread, so torch never runs two
    forward passes at once. A batch that fails with a RequestError is retried window by window,
    so one bad window cannot fail the requests it happened to share a batch with.

    Known shortcoming: batching saves only the forward pass; ``forecast_batch`` still prepares
    each window (stamps, time features) in pandas, which dominates for small models.
    """

    def __init__(
        self,
        forecast_batch: Callable[[list[pd.DataFrame]], list[pd.DataFrame]],
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        on_batch: Callable[[int], None] | None = None,
    ):
        if max_batch < 1:
            raise ConfigError(f"max_batch must be 1 or more (--max-batch), got {max_batch}")
        if max_wait_s < 0:
            raise ConfigError(f"max_wait must be 0 or more (--max-wait-ms), got {max_wait_s}s")
        self._forecast_batch = forecast_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[pd.DataFrame, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="forecast")

    async def submit(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecast ``frame`` in the next batch; raises what the Forecaster raised for it."""
        if self._worker is None or self._worker.done():
            # Created lazily: the queue and task belong to the loop uvicorn runs.
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((frame, future))
        return await future

    async def run_alone(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the forecast thread, outside any batch."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():  # windows that queued while the last batch ran
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            frames = [frame for frame, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._forecast, frames)
            except Exception as exc:  # a fault, not a bad window: every caller gets it
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _forecast(self, frames: list[pd.DataFrame]) -> list[pd.DataFrame | Exception]:
        try:
            return self._call(frames)
        except RequestError:
            if len(frames) == 1:
                raise
        results: list[pd.DataFrame | Exception] = []
        for frame in frames:
            try:
                results.append(self._call([frame])[0])
            except RequestError as exc:
                results.append(exc)
        return results

    def _call(self, frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
        if self._on_batch:
            self._on_batch(len(frames))
        return list(self._forecast_batch(frames))


# -- the KServe model ----------------------------------------------------------------------------


class ForecastModel(Model):
    """A Forecaster as a KServe model: parse -> forecast (micro-batched) -> answer."""

    def __init__(
        self,
        name: str,
        forecaster: Forecaster,
        version: str | None = None,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        prediction_log: predlog.PredictionLogger | None = None,
    ):
        super().__init__(name)
        self.forecaster = forecaster
        self.version = version
        self.prediction_log = prediction_log
        self.model_uri: str | None = None
        id_col = getattr(getattr(forecaster, "spec", None), "id_col", None)
        self.schema = Schema(tuple(forecaster.input_cols), forecaster.pred_len, id_col)
        self.batcher = MicroBatcher(
            self._forecast_batch,
            max_batch=max_batch,
            max_wait_s=max_wait_ms / 1000,
            on_batch=BATCH_SIZE.labels(model_name=name).observe,
        )
        self.load()

    def load(self) -> bool:
        # The forecaster arrives loaded and hash-checked; nothing is left to read.
        self.ready = True
        return self.ready

    def validate(self, payload: Any) -> Any:
        # KServe's check expects raw dicts; the payload here is already a ForecastRequest.
        return payload

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            return protocol.parse_v2(payload, self.schema)
        if isinstance(payload, InvocationsBody):
            return protocol.parse_invocations(payload.body, self.schema)
        return protocol.parse_v1(payload, self.schema)

    async def predict(
        self,
        payload: ForecastRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> tuple[ForecastRequest, pd.DataFrame]:
        if self.schema.id_col and self.schema.id_col in payload.frame.columns:
            # Long-format windows are split per series inside forecast(); run it directly.
            forecast = await self.batcher.run_alone(self._forecast_long, payload.frame)
        else:
            forecast = await self.batcher.submit(payload.frame)
        return payload, forecast

    async def postprocess(
        self,
        result: tuple[ForecastRequest, pd.DataFrame],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        request, forecast = result
        forecast = protocol.trim(forecast, request.horizon, self.schema.id_col)
        await self._record(request, forecast)
        if request.route == "v2":
            return protocol.v2_response(forecast, self.name, self.version, request.request_id)
        return protocol.records_response(forecast, self.name, self.version)

    async def _record(self, request: ForecastRequest, forecast: pd.DataFrame) -> None:
        """Count the forecast and append it to the prediction log; never fails the request."""
        id_col = self.schema.id_col
        n_series = forecast[id_col].nunique() if id_col and id_col in forecast.columns else 1
        FORECASTS.labels(model_name=self.name, model_version=str(self.version)).inc(n_series)
        if self.prediction_log is None:
            return
        try:
            record = predlog.make_record(
                self.name, self.version, request.route, request.request_id, request.frame,
                forecast, list(self.schema.input_cols), self.forecaster.seq_len, id_col,
            )
        except Exception:  # a logging bug must not cost the client its answer
            log.exception("cannot build the prediction-log record of a request")
            predlog.LOG_FAILURES.labels(reason="record_error").inc()
            return
        await self.prediction_log.log(record)

    def _forecast_long(self, frame: pd.DataFrame) -> pd.DataFrame:
        with torch.inference_mode():
            return self.forecaster.forecast(frame)

    def _forecast_batch(self, frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
        with torch.inference_mode():
            return self.forecaster.forecast_batch(frames)

    def get_input_types(self) -> list[dict[str, Any]]:
        stamps = {"name": protocol.TIME, "datatype": "BYTES", "shape": [-1]}
        values = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in self.schema.input_cols]
        return [stamps, *values]

    def get_output_types(self) -> list[dict[str, Any]]:
        n = self.forecaster.pred_len
        stamps = {"name": protocol.TIME, "datatype": "BYTES", "shape": [n]}
        outputs = self.forecaster.output_cols
        values = [{"name": c, "datatype": "FP64", "shape": [n]} for c in outputs]
        return [stamps, *values]


class VersionedDataPlane(DataPlane):
    """KServe's data plane, with the served version in V2 model metadata (``versions``)."""

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        version = getattr(self.get_model_from_registry(model_name), "version", None)
        if version is not None:
            metadata["versions"] = [str(version)]
        return metadata


# -- HTTP: auth, extra routes, error answers ------------------------------------------------------


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <token>`` (health checks exempt)."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(sent, self._expected):
            await self.app(scope, receive, send)
            return
        REJECTED.labels(status="401").inc()
        body = {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"}
        response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


async def _informerflow_error(_: Request, exc: InformerflowError) -> JSONResponse:
    status = http_status(exc)
    if status >= 500:
        log.error("cannot answer: %s", exc)
        FAILED.labels(status=str(status)).inc()
    else:
        log.info("rejected request (%d): %s", status, exc)
        REJECTED.labels(status=str(status)).inc()
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
    log.info("rejected request (400): %s", exc)
    REJECTED.labels(status="400").inc()
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _malformed_body(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a V2 body that is not an InferenceRequest, as a 400 naming the field."""
    problems = []
    for err in exc.errors():
        # The V2 route's body is Union[InferenceRequest, bytes]; only the first branch matters.
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if loc[:1] == ["bytes"]:
            continue
        problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    message = "malformed inference request: " + "; ".join(problems[:5])
    log.info("rejected request (400): %s", message)
    REJECTED.labels(status="400").inc()
    return JSONResponse({"error": message}, status_code=400)


async def _unknown_model(_: Request, exc: ModelNotFound) -> JSONResponse:
    log.info("rejected request (404): %s", exc)
    REJECTED.labels(status="404").inc()
    return JSONResponse({"error": str(exc)}, status_code=404)


async def _fault(_: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error while answering a request")
    FAILED.labels(status="500").inc()
    return JSONResponse(
        {"error": f"internal server error ({type(exc).__name__}); see the server log"},
        status_code=500,
    )


class LoopbackRESTServer(RESTServer):
    """KServe's REST server on a socket bound by us, plus /invocations, auth and error answers."""

    def __init__(self, *args: Any, sock: socket.socket, token: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sock = sock
        self._token = token
        self.config.host, self.config.port = sock.getsockname()[:2]

    def _add_middlewares(self, app: FastAPI) -> None:
        super()._add_middlewares(app)
        if self._token:
            app.add_middleware(BearerAuth, token=self._token)

    def _register_endpoints(self, app: FastAPI) -> None:
        super()._register_endpoints(app)
        app.add_api_route("/invocations", self._invocations, methods=["POST"])
        app.add_api_route("/ping", self._ping, methods=["GET"])
        app.add_api_route("/health", self._ping, methods=["GET"])
        app.add_api_route("/dashboard", self._dashboard, methods=["GET"])
        app.add_api_route("/dashboard/data", self._dashboard_data, methods=["GET"])

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(InformerflowError, _informerflow_error)
        app.add_exception_handler(InvalidInput, _invalid_input)
        app.add_exception_handler(RequestValidationError, _malformed_body)
        app.add_exception_handler(ModelNotFound, _unknown_model)
        app.add_exception_handler(Exception, _fault)

    async def _invocations(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"/invocations body is not valid JSON: {exc}") from exc
        response, _ = await self.dataplane.infer(self._model().name, InvocationsBody(body))
        return ORJSONResponse(response)

    def _board(self) -> dict:
        model = self._model()
        store = model.prediction_log.store.path if model.prediction_log else None
        return status.dashboard_data(model.name, model.version, model.model_uri,
                                     model.forecaster.target, store)

    async def _dashboard(self) -> Response:
        board = await asyncio.get_running_loop().run_in_executor(None, self._board)
        return Response(dashboard.render(board), media_type="text/html; charset=utf-8")

    async def _dashboard_data(self) -> Response:
        board = await asyncio.get_running_loop().run_in_executor(None, self._board)
        return ORJSONResponse(board)

    def _model(self) -> ForecastModel:
        models = list(self.dataplane.model_registry.get_models().values())
        if not models:
            raise DeploymentError("no model is loaded in this server")
        return models[0]

    async def _ping(self) -> Response:
        return Response("\n", media_type="text/plain")

    async def start(self) -> None:
        self.create_application()
        host, port = self._sock.getsockname()[:2]
        log.info("serving on http://%s:%d", host, port)
        await self._server.serve(sockets=[self._sock])


class ForecastServer(ModelServer):
    """ModelServer with one REST server on a pre-bound socket and no gRPC server."""

    def __init__(self, sock: socket.socket, token: str | None = None, grace_period: int = 5):
        super().__init__(
            http_port=sock.getsockname()[1],
            enable_grpc=False,
            workers=1,
            grace_period=grace_period,
        )
        self.dataplane = VersionedDataPlane(model_registry=self.registered_models)
        self._sock = sock
        self._token = token

    def start(self, models: list[Model]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = LoopbackRESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=self.grace_period,
            timeout_keep_alive=self.timeout_keep_alive,
            sock=self._sock,
            token=self._token,
        )
        # uvicorn installs its own SIGINT/SIGTERM handlers and drains requests on shutdown;
        # KServe's extra handlers are left out because they only stop multi-process servers.
        asyncio.run(self._serve_rest())

    async def _serve_rest(self) -> None:
        workers = self.max_asyncio_workers or min(32, (os.cpu_count() or 1) + 4)
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        )
        await self._rest_server.start()


# -- loading and the entry point -----------------------------------------------------------------


@dataclass
class LoadedModel:
    """A forecaster plus the registry identity it is served under."""

    forecaster: Forecaster
    name: str
    version: str | None


_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))$")


def resolve_identity(model_uri: str) -> tuple[str | None, str | None]:
    """Registered name and version of a ``models:/`` URI; (None, None) for any other URI."""
    match = _REGISTRY_URI.match(model_uri)
    if not match:
        return None, None
    name, alias, ref = match["name"], match["alias"], match["ref"]
    client = MlflowClient()
    if alias:
        return name, str(client.get_model_version_by_alias(name, alias).version)
    if ref.isdigit():
        return name, ref
    latest = client.get_latest_versions(name, stages=[ref])  # a legacy stage name
    return name, str(latest[0].version) if latest else None


def load_model(
    model_uri: str, tracking_uri: str | None = None, name: str | None = None
) -> LoadedModel:
    """Load the Forecaster behind ``model_uri`` (registry URI, ``runs:/`` URI or a local dir).

    Raises:
        ModelLoadError: when the model cannot be found or its files fail the hash check.
    """
    from informerflow import tracking  # imported late: it pulls in MLflow's registry client

    tracking.configure(tracking_uri)
    started = time.perf_counter()
    try:
        registered, version = resolve_identity(model_uri)
        wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        forecaster: Forecaster = wrapper.forecaster
    except Exception as exc:  # MLflow wraps loader errors; surface ours, name the URI otherwise
        cause = _find_cause(exc, ModelLoadError)
        if cause is not None:
            raise ModelLoadError(f"cannot serve {model_uri}: {cause}") from exc
        raise ModelLoadError(
            f"cannot load model {model_uri}: {type(exc).__name__}: {exc}. Check the URI and the "
            "tracking URI (--tracking-uri or MLFLOW_TRACKING_URI)"
        ) from exc
    forecaster.name = name or registered or forecaster.name or DEFAULT_NAME
    forecaster.version = version or forecaster.version
    log.info(
        "loaded %s (model %s, version %s, seq_len %d, pred_len %d) in %.1fs",
        model_uri, forecaster.name, forecaster.version, forecaster.seq_len, forecaster.pred_len,
        time.perf_counter() - started,
    )
    return LoadedModel(forecaster, forecaster.name, forecaster.version)


def _find_cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def default_threads() -> int:
    """Torch intra-op threads: min(2, cores // 2), at least 1.

    The event loop (JSON, pandas) and the forecast worker thread are both busy under load, so
    torch gets at most half the cores. Measured on a shared 2-core machine with the tiny test
    model: one thread forecast a window in ~10-40 ms, two threads in ~30-340 ms (OpenMP workers
    spinning against the other busy threads).
    """
    return max(1, min(2, (os.cpu_count() or 1) // 2))


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(
    model_uri: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    tracking_uri: str | None = None,
    name: str | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    threads: int | None = None,
    sock: socket.socket | None = None,
    prediction_log: str | None = None,
    log_wait_ms: float = 250.0,
) -> None:
    """Serve ``model_uri`` until SIGINT/SIGTERM: bind -> load (hash-checked) -> serve.

    ``sock`` is an already bound socket to serve on instead of binding ``host:port`` here.
    ``prediction_log`` is the SQLite file every answer is appended to (default: the state
    directory's ``predictions.db``; ``"off"`` turns logging off). A request waits at most
    ``log_wait_ms`` for its record to be committed.

    Raises:
        DeploymentError: the address cannot be bound.
        ModelLoadError: the model is missing or tampered with.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    if log_wait_ms < 0:
        raise ConfigError(f"--log-wait-ms must be 0 or more, got {log_wait_ms}")
    # uvicorn drains requests on SIGTERM and then raises the signal again with the handler it
    # found; the default one would kill the process before the prediction log is flushed below.
    if threading.current_thread() is threading.main_thread():  # only there can it be set
        signal.signal(signal.SIGTERM, _exit_cleanly)
    sock = sock or bind_listener(host, port)
    logger = None
    try:
        loaded = load_model(model_uri, tracking_uri, name)
        if prediction_log != LOG_OFF:
            store = predlog.PredictionLog(prediction_log or None)
            logger = predlog.PredictionLogger(store, max_wait_s=log_wait_ms / 1000)
            log.info("logging every forecast to %s", store.path)
        model = ForecastModel(
            loaded.name, loaded.forecaster, loaded.version, max_batch, max_wait_ms, logger
        )
        model.model_uri = model_uri
        f = loaded.forecaster
        MODEL_INFO.labels(model_name=loaded.name, model_version=str(loaded.version),
                          seq_len=str(f.seq_len), pred_len=str(f.pred_len), freq=f.freq).set(1)
        with contextlib.suppress(ValueError):  # already registered: a second serve() in-process
            REGISTRY.register(status.MonitorCollector(loaded.name, loaded.version))
        if host not in ("127.0.0.1", "localhost", "::1") and not token:
            log.warning(
                "listening on %s without a token: anyone who can reach this port can query the "
                "model; pass --token or set %s", host, TOKEN_ENV,
            )
        ForecastServer(sock, token=token).start([model])
    finally:
        if logger is not None:
            logger.close()  # after uvicorn drained: every answered record gets written
        sock.close()
