"""Deploying to KServe: the rendered InferenceService and how it is applied to a cluster.

No Kubernetes API server can run on this machine, so the apply tests talk to a small fake one:
an ``http.server`` on a free 127.0.0.1 port that answers the few InferenceService routes the
``kubernetes`` client calls, records every request, and is reached through a kubeconfig file
written to a temporary directory. The client, its kubeconfig loading and our error handling are
real; only the cluster is not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kserve
import pytest
import yaml

from informerflow.errors import ConfigError, DeploymentError
from informerflow.serving import kube
from informerflow.serving.kube import (
    Resources,
    check_name,
    check_storage_uri,
    deploy_kserve,
    render_inference_service,
    storage_for,
    validate_manifest,
)

STORAGE = "s3://models/informer/v3"
TOKEN = "fake-cluster-token"
ROUTE = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices"
    r"(?:/(?P<name>[^/?]+))?"
)
NOT_READY = {"conditions": [
    {"type": "PredictorReady", "status": "False", "reason": "RevisionMissing",
     "message": "waiting for a revision"},
    {"type": "Ready", "status": "False", "reason": "RevisionMissing",
     "message": "waiting for a revision"},
]}
READY = {"url": "http://informer.models.example.com", "conditions": [
    {"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"},
]}


# -- the fake API server -----------------------------------------------------------------------


class FakeKube:
    """Answers DELETE/GET/POST on InferenceServices like an API server with KServe installed.

    ``delete_status`` other than 200 makes every DELETE fail with that status; a created
    service reports ``NOT_READY`` for its first ``not_ready_polls`` reads, then ``READY``.
    """

    def __init__(self, existing: bool = False, delete_status: int = 200,
                 create_status: int = 201, not_ready_polls: int = 1):
        self.requests: list[dict[str, Any]] = []
        self.objects: dict[str, dict] = {"informer": {"status": READY}} if existing else {}
        self.delete_status, self.create_status = delete_status, create_status
        self.not_ready_polls = not_ready_polls
        self._reads = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

            def do_DELETE(self) -> None:  # noqa: N802 (http.server's naming)
                fake._serve(self, "DELETE")

            def do_GET(self) -> None:  # noqa: N802
                fake._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._serve(self, "POST")

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        self.requests.append({"method": method, "path": handler.path, "body": body,
                              "auth": handler.headers.get("Authorization")})
        match = ROUTE.match(handler.path)
        if not match:
            return self._reply(handler, 404, self._status(404, "NotFound", "no such route"))
        name = match["name"]
        if method == "DELETE":
            return self._delete(handler, name)
        if method == "POST":
            return self._create(handler, body)
        return self._get(handler, name)

    def _delete(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        if self.delete_status != 200:
            message = "etcdserver: request timed out"
            return self._reply(handler, self.delete_status,
                               self._status(self.delete_status, "InternalError", message))
        if self.objects.pop(name, None) is None:
            return self._not_found(handler, name)
        self._reply(handler, 200, self._status(200, "Success", "deleted"))

    def _create(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        if self.create_status != 201:
            message = "the server could not find the requested resource"
            return self._reply(handler, self.create_status,
                               self._status(self.create_status, "NotFound", message))
        self.objects[body["metadata"]["name"]] = body
        self._reply(handler, 201, body)

    def _get(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        if name not in self.objects:
            return self._not_found(handler, name)
        self._reads += 1
        status = NOT_READY if self._reads <= self.not_ready_polls else READY
        self._reply(handler, 200, {**self.objects[name], "status": status})

    def _not_found(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        message = f'inferenceservices.serving.kserve.io "{name}" not found'
        self._reply(handler, 404, self._status(404, "NotFound", message))

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                "reason": reason, "message": message}

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def write_kubeconfig(path: Path, server: str, namespace: str = "models") -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester",
                                                  "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def cluster(tmp_path):
    """Start a FakeKube with the given behaviour and a kubeconfig pointing at it."""
    started: list[FakeKube] = []

    def start(**behaviour: Any) -> tuple[FakeKube, str]:
        fake = FakeKube(**behaviour)
        threading.Thread(target=fake.server.serve_forever, args=(0.05,), daemon=True).start()
        started.append(fake)
        return fake, str(write_kubeconfig(tmp_path / f"kubeconfig-{len(started)}", fake.url))

    yield start
    for fake in started:
        fake.server.shutdown()
        fake.server.server_close()


def deploy(config: str, **kwargs: Any) -> kube.KServeDeployment:
    options = {"name": "informer", "timeout": 5.0, "poll_s": 0.01} | kwargs
    return deploy_kserve(STORAGE, config_file=config, **options)


ITEM = "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/informer"
COLLECTION = "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices"


# -- applying ----------------------------------------------------------------------------------


def test_an_existing_service_is_deleted_then_created_and_polled_until_ready(cluster):
    fake, config = cluster(existing=True, not_ready_polls=2)

    result = deploy(config)

    assert fake.calls() == [
        ("DELETE", ITEM),
        ("GET", ITEM),  # 404: the old one is gone
        ("POST", COLLECTION),
        ("GET", ITEM), ("GET", ITEM),  # not ready twice
        ("GET", ITEM),  # ready
    ]
    created = fake.requests[2]["body"]
    assert created == render_inference_service("informer", STORAGE, namespace="models",
                                               model_uri=STORAGE)
    assert {r["auth"] for r in fake.requests} == {f"Bearer {TOKEN}"}
    assert result.applied and result.namespace == "models"
    assert result.url == "http://informer.models.example.com"
    assert [c["type"] for c in result.conditions] == ["PredictorReady", "Ready"]


def test_a_404_on_delete_means_there_was_nothing_to_replace(cluster):
    fake, config = cluster(existing=False, not_ready_polls=0)

    result = deploy(config, namespace="team-a")

    item = ITEM.replace("/models/", "/team-a/")
    assert fake.calls() == [("DELETE", item), ("POST", COLLECTION.replace("/models/", "/team-a/")),
                            ("GET", item)]
    assert fake.requests[1]["body"]["metadata"]["namespace"] == "team-a"
    assert result.namespace == "team-a" and result.applied


def test_a_500_on_delete_stops_before_anything_is_created(cluster):
    fake, config = cluster(existing=True, delete_status=500)

    with pytest.raises(DeploymentError, match=(
        r"^cannot delete the existing InferenceService models/informer: the API server answered "
        r"500 Internal Server Error: etcdserver: request timed out$"
    )):
        deploy(config)
    assert fake.calls() == [("DELETE", ITEM)]


def test_a_forbidden_delete_points_at_credentials(cluster):
    fake, config = cluster(existing=True, delete_status=403)

    with pytest.raises(DeploymentError, match=r"answered 403 Forbidden: .*check the kube "
                                              r"context's credentials and RBAC"):
        deploy(config)
    assert fake.calls() == [("DELETE", ITEM)]


def test_not_ready_in_time_names_the_last_conditions(cluster):
    fake, config = cluster(not_ready_polls=10**6)

    with pytest.raises(DeploymentError, match=re.escape(
        "InferenceService models/informer was not Ready within 0.3s; last conditions: "
        "PredictorReady=False (RevisionMissing: waiting for a revision); "
        "Ready=False (RevisionMissing: waiting for a revision). "
        "See `kubectl describe isvc informer -n models`"
    )):
        deploy(config, timeout=0.3, poll_s=0.05)
    assert fake.calls()[:2] == [("DELETE", ITEM), ("POST", COLLECTION)]
    assert len(fake.calls()) > 3  # it kept polling


def test_a_cluster_without_kserve_is_named(cluster):
    fake, config = cluster(create_status=404)

    with pytest.raises(DeploymentError, match=r"cannot create InferenceService models/informer: "
                                              r"the API server answered 404 .*is KServe installed"):
        deploy(config)
    assert fake.calls() == [("DELETE", ITEM), ("POST", COLLECTION)]


def test_an_unreachable_api_server_is_named(tmp_path):
    with socket_closed_port() as port:
        config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
        with pytest.raises(DeploymentError, match=rf"the API server at http://127\.0\.0\.1:{port} "
                                                  r"is unreachable"):
            deploy(str(config))


def test_no_kubeconfig_and_no_pod_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nope" / "config"
    with pytest.raises(DeploymentError, match=rf"no Kubernetes configuration: no kubeconfig at "
                                              rf"{re.escape(str(missing))} and not running in a "
                                              r"pod; set KUBECONFIG, or pass --dry-run"):
        deploy(str(missing))


class socket_closed_port:  # noqa: N801 (used as a context manager, reads like a function)
    """A loopback port with nothing listening on it, for as long as the block runs."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc: Any) -> None:
        return None


# -- rendering and validation ------------------------------------------------------------------


def test_the_rendered_manifest_is_a_valid_kserve_inference_service():
    manifest = render_inference_service("informer", STORAGE, image="registry.local/if:1",
                                        namespace="models", model_uri="models:/cpu@champion")

    isvc = validate_manifest(manifest)

    assert isinstance(isvc, kserve.V1beta1InferenceService)
    assert (isvc.api_version, isvc.kind) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc.metadata.annotations["informerflow/model-uri"] == "models:/cpu@champion"
    (container,) = isvc.spec.predictor.containers
    assert container.name == "kserve-container"
    assert container.image == "registry.local/if:1"
    assert container.command == ["python", "-m", "informerflow.serving"]
    assert container.args == ["--model-uri", "/mnt/models", "--host", "0.0.0.0", "--port", "8080",
                              "--name", "informer", "--threads", "2"]
    env = {e.name: e.value for e in container.env}
    assert env["STORAGE_URI"] == STORAGE
    assert env["INFORMERFLOW_HOME"] == "/tmp/informerflow"
    assert container.resources.requests == {"cpu": "1", "memory": "1536Mi"}
    assert container.resources.limits == {"cpu": "2", "memory": "3Gi"}


def test_security_context_probe_and_scratch_volume():
    isvc = validate_manifest(render_inference_service("informer", STORAGE))
    (container,) = isvc.spec.predictor.containers

    security = container.security_context
    assert security.run_as_non_root is True and security.run_as_user == 1000
    assert security.allow_privilege_escalation is False
    assert security.read_only_root_filesystem is True
    assert security.capabilities.drop == ["ALL"]
    probe = container.readiness_probe.http_get
    assert (probe.path, probe.port) == ("/v2/health/ready", 8080)
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("scratch", "/tmp")]
    assert isvc.spec.predictor.volumes[0].empty_dir.size_limit == "1Gi"


def test_without_a_read_only_root_there_is_no_scratch_volume():
    manifest = render_inference_service("informer", STORAGE, read_only_root=False)
    container = manifest["spec"]["predictor"]["containers"][0]

    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert "volumeMounts" not in container and "volumes" not in manifest["spec"]["predictor"]
    assert "namespace" not in manifest["metadata"]


def test_validation_lists_every_problem_with_its_path():
    manifest = render_inference_service("informer", STORAGE)
    container = manifest["spec"]["predictor"]["containers"][0]
    del container["name"]
    container["ports"][0]["containerPort"] = "8080"
    manifest["spec"]["predictor"]["storageUrl"] = STORAGE
    manifest["kind"] = "Deployment"

    with pytest.raises(ConfigError) as caught:
        validate_manifest(manifest)
    assert str(caught.value).splitlines() == [
        "the InferenceService manifest is not valid for KServe:",
        "  - spec.predictor.containers[0].ports[0].containerPort: expected int, got '8080'",
        "  - spec.predictor.containers[0]: Invalid value for `name`, must not be `None`",
        "  - spec.predictor.storageUrl: not a field of V1beta1PredictorSpec",
        "  - kind: expected 'InferenceService', got 'Deployment'",
    ]


@pytest.mark.parametrize("uri", ["s3://bucket/models/informer", "gs://bucket/m",
                                 "pvc://model-claim/informer/3"])
def test_storage_schemes_the_initializer_reads_are_accepted(uri):
    assert check_storage_uri(uri) == uri


@pytest.mark.parametrize(("uri", "message"), [
    ("https://host/model", "cannot be read by KServe's storage initializer: use one of s3://, "
                           "gs://, pvc://"),
    ("/home/me/model", "cannot be read by KServe's storage initializer"),
    ("models:/cpu@champion", "cannot be read by KServe's storage initializer"),
    ("s3:///no-bucket", "has no bucket: write s3://BUCKET/PATH"),
    ("pvc://", "has no claim name: write pvc://CLAIM/PATH"),
    ("gs://bucket/with space", "contains whitespace"),
])
def test_other_storage_uris_are_refused(uri, message):
    with pytest.raises(ConfigError, match=re.escape(f"--storage-uri {uri!r} ") + ".*"
                       + re.escape(message)):
        check_storage_uri(uri)


def test_a_registry_uri_needs_a_storage_uri():
    assert storage_for("models:/cpu@champion", "gs://b/m") == "gs://b/m"
    assert storage_for("pvc://claim/m", None) == "pvc://claim/m"
    with pytest.raises(ConfigError, match=r"a cluster cannot read 'models:/cpu@champion' from "
                                          r"this machine: .* pass it with --storage-uri"):
        storage_for("models:/cpu@champion", None)


@pytest.mark.parametrize("name", ["Informer", "1st", "informer-", "a_b", "a" * 46, ""])
def test_names_kubernetes_would_refuse_are_refused(name):
    with pytest.raises(ConfigError, match=re.escape(f"InferenceService name {name!r} is not "
                                                    "allowed: use 1-45 lower-case letters")):
        check_name(name)


def test_torch_threads_follow_the_cpu_limit():
    assert Resources(cpu_limit="500m").threads() == 1
    assert Resources(cpu_limit="1").threads() == 1
    assert Resources(cpu_limit="1500m").threads() == 1
    assert Resources(cpu_limit="8").threads() == 2


# -- the CLI -----------------------------------------------------------------------------------


def _cli(args: list[str], home: Path, kubeconfig: str | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "KUBERNETES_SERVICE_HOST")}
    env["INFORMERFLOW_HOME"] = str(home)
    env["COLUMNS"] = "200"
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run([sys.executable, "-m", "informerflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=home)


def test_dry_run_prints_valid_yaml_and_contacts_nothing(cluster, tmp_path):
    fake, config = cluster(existing=True)

    result = _cli(["deploy", "gs://bucket/informer", "--target", "kserve", "--dry-run",
                   "--name", "cpu-forecast", "--image", "registry.local/if:2"], tmp_path, config)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# informerflow: a KServe InferenceService")
    manifest = yaml.safe_load(result.stdout)
    assert manifest == render_inference_service("cpu-forecast", "gs://bucket/informer",
                                                image="registry.local/if:2",
                                                model_uri="gs://bucket/informer")
    validate_manifest(manifest)
    assert fake.requests == []


def test_cli_refuses_a_registry_uri_and_cluster_flags_for_local(tmp_path):
    kserve_run = _cli(["deploy", "models:/cpu@champion", "--target", "kserve", "--dry-run"],
                      tmp_path)
    local_run = _cli(["deploy", "models:/cpu@champion", "--storage-uri", "s3://b/m",
                      "--dry-run"], tmp_path)

    assert kserve_run.returncode == 2
    assert "a cluster cannot read 'models:/cpu@champion' from this machine" in kserve_run.stderr
    assert local_run.returncode == 2
    assert "--storage-uri, --dry-run only apply to --target kserve" in local_run.stderr
    assert "Traceback" not in kserve_run.stderr + local_run.stderr


def test_cli_local_target_starts_an_endpoint_from_a_model_directory(tmp_path, monkeypatch):
    # The pod serves a plain MLflow model directory; this is the same command on loopback.
    from informerflow.serving.endpoints import list_endpoints, stop_endpoint
    from test_endpoints import build_model_dir, free_port

    model_dir = build_model_dir(tmp_path / "model")
    home, port = tmp_path / "home", free_port()
    home.mkdir()
    monkeypatch.setenv("INFORMERFLOW_HOME", str(home))
    try:
        result = _cli(["deploy", str(model_dir), "--name", "kube-local", "--port", str(port),
                       "--timeout", "180"], home)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (f"endpoint kube-local at http://127.0.0.1:{port} (pid "
                in result.stdout)
        assert "serving informer (unregistered)" in result.stdout
        url = f"http://127.0.0.1:{port}/v2/models/informer"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["name"] == "informer"
    finally:
        for endpoint in list_endpoints():
            stop_endpoint(endpoint.name)


# -- the listener the server binds (in a pod and locally) --------------------------------------


def test_connections_to_the_server_listener_get_tcp_nodelay():
    """Without TCP_NODELAY each answer waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from informerflow.serving.endpoints import bind_listener

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = bind_listener("127.0.0.1", 0)
        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
