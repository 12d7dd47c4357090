"""Serving a model on Kubernetes as a KServe InferenceService.

The predictor is a custom container running our own model server image (see ``Dockerfile``)::

    python -m informerflow.serving --model-uri /mnt/models --host 0.0.0.0 --port 8080 ...

KServe's storage initializer copies the MLflow model directory named by ``STORAGE_URI`` (s3://,
gs://, or a PVC mounted as pvc://CLAIM/PATH) to ``/mnt/models`` before the server starts, so the
pod never needs to reach this machine's MLflow registry.

Life cycle of :func:`deploy_kserve`: check the storage URI and name -> render the manifest ->
validate it against the ``kserve`` package's InferenceService models -> stop here on a dry run ->
connect (current kube context, else in-cluster) -> delete an InferenceService of the same name ->
create the new one -> poll until its ``Ready`` condition is ``True``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from informerflow import __version__
from informerflow.errors import ConfigError, DeploymentError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_IMAGE = f"informerflow:{__version__}"
DEFAULT_NAME = "informer"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the model
PORT = 8080
# KServe reads STORAGE_URI only from the predictor container with this name.
CONTAINER_NAME = "kserve-container"
STORAGE_SCHEMES = ("s3", "gs", "pvc")
SCRATCH = "/tmp"  # the one writable path when the root filesystem is read-only
# A DNS-1035 label, as KServe requires; 45 characters leave room for the suffixes KServe and
# Knative append to derived object names (e.g. "-predictor-00001"), which must stay within 63.
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$")
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Resources:
    """CPU and memory for the predictor container (Kubernetes quantity strings).

    The defaults fit the bundled model sizes: torch, pandas and MLflow alone take ~700 MB.
    """

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1536Mi"
    memory_limit: str = "3Gi"

    def threads(self) -> int:
        """Torch threads for the CPU limit: the server would otherwise size them by the node."""
        limit = self.cpu_limit
        cores = float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
        return max(1, min(2, int(cores)))


@dataclass
class KServeDeployment:
    """What ``deploy_kserve`` did: the manifest and, unless a dry run, the live state."""

    name: str
    namespace: str | None
    storage_uri: str
    manifest: dict[str, Any]
    yaml: str
    applied: bool = False
    url: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)


# -- rendering -------------------------------------------------------------------------------------


def check_storage_uri(uri: str) -> str:
    """Return ``uri`` when the storage initializer can fetch it (s3://, gs://, pvc://).

    Raises:
        ConfigError: naming the URI and the schemes allowed.
    """
    parts = urlsplit(uri or "")
    allowed = ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
    if parts.scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"--storage-uri {uri!r} cannot be read by KServe's storage initializer: use one of "
            f"{allowed} pointing at the MLflow model directory (the one holding MLmodel)"
        )
    if not parts.netloc:
        what, placeholder = ("claim name", "CLAIM") if parts.scheme == "pvc" else ("bucket",
                                                                                  "BUCKET")
        raise ConfigError(
            f"--storage-uri {uri!r} has no {what}: write {parts.scheme}://{placeholder}/PATH"
        )
    if any(ch.isspace() for ch in uri):
        raise ConfigError(f"--storage-uri {uri!r} contains whitespace; URL-encode it or rename")
    return uri


def check_name(name: str) -> str:
    """Return ``name`` when it is a valid InferenceService name.

    Raises:
        ConfigError: naming the value and the rule.
    """
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"InferenceService name {name!r} is not allowed: use 1-45 lower-case letters, digits "
            "or '-', starting with a letter and ending with a letter or digit (--name)"
        )
    return name


def storage_for(model_uri: str, storage_uri: str | None) -> str:
    """The storage URI to deploy: ``--storage-uri``, else MODEL_URI when it is a storage URI.

    Raises:
        ConfigError: neither names storage the cluster can read.
    """
    if storage_uri:
        return check_storage_uri(storage_uri)
    if urlsplit(model_uri).scheme in STORAGE_SCHEMES:
        return check_storage_uri(model_uri)
    raise ConfigError(
        f"a cluster cannot read {model_uri!r} from this machine: copy the MLflow model directory "
        "(e.g. `mlflow artifacts download -u models:/NAME@champion -d DIR`) to s3://, gs:// or a "
        "PVC and pass it with --storage-uri"
    )


def render_inference_service(
    name: str,
    storage_uri: str,
    image: str = DEFAULT_IMAGE,
    namespace: str | None = None,
    resources: Resources | None = None,
    model_uri: str | None = None,
    read_only_root: bool = True,
) -> dict[str, Any]:
    """The InferenceService manifest serving the model at ``storage_uri`` with our server image.

    ``namespace`` None leaves it out, so ``kubectl apply -n`` (or the context) decides.
    ``read_only_root`` mounts an emptyDir at /tmp for the server's scratch files; turn it off on
    Knative installations that refuse emptyDir volumes (the feature flag
    ``kubernetes.podspec-volumes-emptydir``).

    Raises:
        ConfigError: the name or storage URI is not acceptable.
    """
    check_name(name)
    check_storage_uri(storage_uri)
    resources = resources or Resources()
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "informerflow"},
        "annotations": {"informerflow/model-uri": model_uri or storage_uri,
                        "informerflow/version": __version__},
    }
    if namespace:
        metadata["namespace"] = namespace
    predictor: dict[str, Any] = {
        "containers": [_container(name, storage_uri, image, resources, read_only_root)]
    }
    if read_only_root:
        predictor["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": {"predictor": predictor}}


def _container(
    name: str, storage_uri: str, image: str, resources: Resources, read_only_root: bool
) -> dict[str, Any]:
    # The server binds 127.0.0.1 by default; in a pod it must listen on all interfaces, because
    # the kubelet's probes and the Knative queue-proxy or Service connect to the pod IP. The
    # network boundary is the cluster's (NetworkPolicy, the KServe ingress), not loopback.
    args = ["--model-uri", MODEL_DIR, "--host", "0.0.0.0", "--port", str(PORT),
            # KServe's convention: the model answers under the InferenceService's name.
            "--name", name, "--threads", str(resources.threads())]
    env = [
        {"name": "STORAGE_URI", "value": storage_uri},
        # No registry in the pod: the model is a local directory. The state dir (MLflow's
        # default SQLite store), HOME and matplotlib's cache go to the writable scratch mount.
        {"name": "INFORMERFLOW_HOME", "value": f"{SCRATCH}/informerflow"},
        {"name": "HOME", "value": SCRATCH},
        {"name": "MPLCONFIGDIR", "value": f"{SCRATCH}/matplotlib"},
        # MLflow would otherwise report usage from the pod to an outside endpoint.
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["python", "-m", "informerflow.serving"],
        "args": args,
        "env": env,
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
            "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
        },
        # Ready only once the model is loaded and hash-checked; loading takes ~10 s.
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": PORT},
            "initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": read_only_root,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if read_only_root:
        container["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH}]
    return container


def to_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML, with a header saying what it is and how to apply it."""
    header = (
        "# informerflow: a KServe InferenceService running the informerflow model server.\n"
        "# Apply with `kubectl apply -f FILE`; the model comes from the STORAGE_URI env var.\n"
    )
    return header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


# -- validation against KServe's models ------------------------------------------------------------


_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (float, int), "object": (object,),
}


def validate_manifest(manifest: dict[str, Any]) -> Any:
    """Build ``kserve.V1beta1InferenceService`` from ``manifest``, field by field.

    Stricter than the generated deserializer, which drops unknown keys silently: every key must
    be a field of its model class (KServe's own or the Kubernetes core models it nests), every
    value must have the declared type, and each class's own checks (required fields, enums) run.

    Raises:
        ConfigError: listing every problem with its path, e.g. ``spec.predictor.containers[0]``.
    """
    problems: list[str] = []
    built = _build(manifest, "V1beta1InferenceService", "", problems)
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if manifest.get(key) != expected:
            problems.append(f"{key}: expected {expected!r}, got {manifest.get(key)!r}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"the InferenceService manifest is not valid for KServe:\n{lines}")
    return built


def _model_class(type_name: str) -> type | None:
    import kserve.models
    import kubernetes.client.models

    return getattr(kserve.models, type_name, None) or getattr(
        kubernetes.client.models, type_name, None)


def _build(data: Any, type_name: str, path: str, problems: list[str]) -> Any:
    where = path or "(top level)"
    if type_name.startswith("list["):
        if not isinstance(data, list):
            problems.append(f"{where}: expected a list, got {type(data).__name__}")
            return None
        item = type_name[5:-1]
        return [_build(v, item, f"{path}[{i}]", problems) for i, v in enumerate(data)]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            problems.append(f"{where}: expected a mapping, got {type(data).__name__}")
            return None
        value_type = type_name[5:-1].split(", ", 1)[1]
        return {k: _build(v, value_type, f"{path}.{k}", problems) for k, v in data.items()}
    if type_name in _PRIMITIVES:
        ok = isinstance(data, _PRIMITIVES[type_name])
        if ok and type_name in ("int", "float") and isinstance(data, bool):
            ok = False
        if not ok:
            problems.append(f"{where}: expected {type_name}, got {data!r}")
        return data
    cls = _model_class(type_name)
    if cls is None:  # e.g. KServe's "ResourceQuantity": no model class to check against
        return data
    return _build_model(cls, data, path, problems)


def _build_model(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    where = path or "(top level)"
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a {cls.__name__} mapping, got {data!r}")
        return None
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        child = f"{path}.{key}" if path else key
        if key not in by_key:
            problems.append(f"{child}: not a field of {cls.__name__}")
            continue
        attr = by_key[key]
        kwargs[attr] = _build(value, cls.openapi_types[attr], child, problems)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # the generated classes' own checks
        problems.append(f"{where}: {exc}")
        return None


# -- applying --------------------------------------------------------------------------------------


def connect(config_file: str | None = None) -> tuple[Any, str]:
    """An API client for the current kube context (else in-cluster) and its namespace.

    ``config_file`` defaults to ``$KUBECONFIG``, then ``~/.kube/config``.

    Raises:
        DeploymentError: no configuration is found or it cannot be loaded.
    """
    from kubernetes import client, config

    path = config_file or os.environ.get("KUBECONFIG") or "~/.kube/config"
    found = [p for p in path.split(os.pathsep) if p and Path(p).expanduser().is_file()]
    try:
        if found:
            api = config.new_client_from_config(config_file=os.pathsep.join(found))
            _, active = config.list_kube_config_contexts(config_file=os.pathsep.join(found))
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
            log.info("using kube context %s at %s", (active or {}).get("name"),
                     api.configuration.host)
            return api, namespace
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            namespace = _IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
            return client.ApiClient(configuration), namespace
    except (config.ConfigException, OSError, ValueError) as exc:
        raise DeploymentError(f"cannot load the Kubernetes configuration ({path}): {exc}") from exc
    raise DeploymentError(
        f"no Kubernetes configuration: no kubeconfig at {path} and not running in a pod; set "
        "KUBECONFIG, or pass --dry-run to print the manifest instead"
    )


def apply_inference_service(
    api: Any, manifest: dict[str, Any], namespace: str, timeout: float = 300.0,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Replace the InferenceService in ``namespace`` and wait until it is Ready.

    An existing one of the same name is deleted first (a 404 means there was none), and its
    disappearance awaited, so the new spec never merges with the old one.

    Returns:
        The InferenceService as the API server last reported it.

    Raises:
        DeploymentError: the API refused a call, could not be reached, or the service was not
            Ready within ``timeout`` seconds (naming its last conditions).
    """
    from kubernetes import client

    objects = client.CustomObjectsApi(api)
    name = manifest["metadata"]["name"]
    deadline = time.monotonic() + timeout
    if _delete(objects, namespace, name):
        _wait_gone(objects, namespace, name, deadline, poll_s)
    with _api_errors(f"create InferenceService {namespace}/{name}", api):
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    log.info("created InferenceService %s/%s; waiting for Ready", namespace, name)
    return _wait_ready(objects, namespace, name, deadline, poll_s, timeout)


def _delete(objects: Any, namespace: str, name: str) -> bool:
    """Delete the InferenceService; False when there was none."""
    from kubernetes.client.exceptions import ApiException

    try:
        with _api_errors(f"delete the existing InferenceService {namespace}/{name}",
                         objects.api_client, passthrough=404):
            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:  # only the 404 passes through
        log.info("no InferenceService %s/%s to replace (%s)", namespace, name, exc.status)
        return False
    log.info("deleted the existing InferenceService %s/%s", namespace, name)
    return True


def _get(objects: Any, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        with _api_errors(f"read InferenceService {namespace}/{name}", objects.api_client,
                         passthrough=404):
            return objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException:
        return None


def _wait_gone(objects: Any, namespace: str, name: str, deadline: float, poll_s: float) -> None:
    while _get(objects, namespace, name) is not None:
        if time.monotonic() >= deadline:
            raise DeploymentError(
                f"the old InferenceService {namespace}/{name} was still being deleted when the "
                "timeout ran out; check its finalizers with `kubectl get isvc -o yaml`"
            )
        time.sleep(poll_s)


def _wait_ready(
    objects: Any, namespace: str, name: str, deadline: float, poll_s: float, timeout: float
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    while True:
        current = _get(objects, namespace, name) or {}
        conditions = (current.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return current
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    raise DeploymentError(
        f"InferenceService {namespace}/{name} was not Ready within {timeout:g}s; last conditions: "
        f"{describe_conditions(conditions)}. See `kubectl describe isvc {name} -n {namespace}`"
    )


def describe_conditions(conditions: list[dict[str, Any]]) -> str:
    """``Ready=False (Reason: message); ...``, or a hint when the controller reported nothing."""
    if not conditions:
        return "none reported (is the KServe controller running in this cluster?)"
    parts = []
    for c in conditions:
        text = f"{c.get('type')}={c.get('status')}"
        detail = ": ".join(str(c[k]) for k in ("reason", "message") if c.get(k))
        parts.append(f"{text} ({detail})" if detail else text)
    return "; ".join(parts)


@contextlib.contextmanager
def _api_errors(action: str, api: Any, passthrough: int | None = None) -> Iterator[None]:
    """Turn the client's exceptions into DeploymentErrors that say what failed and why."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        if exc.status == passthrough:
            raise
        raise DeploymentError(
            f"cannot {action}: the API server answered {exc.status} {exc.reason}: "
            f"{_api_message(exc)}{_hint(exc.status)}"
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        host = api.configuration.host
        raise DeploymentError(f"cannot {action}: the API server at {host} is unreachable ({exc})"
                              ) from exc


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc.body)
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "").strip()[:300] or "(no message)"


def _hint(status: int | None) -> str:
    if status in (401, 403):
        return "; check the kube context's credentials and RBAC for inferenceservices"
    if status == 404:
        return f"; is KServe installed (does the cluster know {PLURAL}.{GROUP})?"
    return ""


# -- the whole deployment --------------------------------------------------------------------------


def deploy_kserve(
    model_uri: str,
    name: str = DEFAULT_NAME,
    storage_uri: str | None = None,
    image: str | None = None,
    namespace: str | None = None,
    dry_run: bool = False,
    timeout: float = 300.0,
    resources: Resources | None = None,
    config_file: str | None = None,
    poll_s: float = 2.0,
) -> KServeDeployment:
    """Render, validate and (unless ``dry_run``) apply the InferenceService for ``model_uri``.

    A dry run contacts nothing, not even the kubeconfig.

    Raises:
        ConfigError: a bad name or storage URI, or a manifest KServe's models reject.
        DeploymentError: the cluster could not be reached, refused the service, or it was not
            Ready in time.
    """
    if timeout <= 0:
        raise ConfigError(f"--timeout must be positive seconds, got {timeout}")
    storage = storage_for(model_uri, storage_uri)
    manifest = render_inference_service(name, storage, image or DEFAULT_IMAGE, namespace,
                                        resources, model_uri)
    validate_manifest(manifest)
    result = KServeDeployment(name, namespace, storage, manifest, to_yaml(manifest))
    if dry_run:
        return result

    api, context_namespace = connect(config_file)
    result.namespace = namespace or context_namespace
    manifest["metadata"]["namespace"] = result.namespace
    current = apply_inference_service(api, manifest, result.namespace, timeout, poll_s)
    status = current.get("status") or {}
    result.applied, result.url = True, status.get("url")
    result.conditions = status.get("conditions") or []
    result.yaml = to_yaml(manifest)
    return result
