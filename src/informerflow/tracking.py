"""MLflow tracking and the model registry: experiments, run records, versions and aliases.

The alias policy: a new version becomes ``champion`` only when its test MAE beats the current
champion's on the same data (same sha256 and split); otherwise it is the ``challenger``. Models
trained on different data are never compared, because their errors are not on the same scale.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from informerflow import __version__, state
from informerflow.errors import ConfigError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
DATA_SHA_TAG = "data.sha256"
SPLIT_TAG = "data.split"


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (default: the state directory's SQLite store)."""
    uri = tracking_uri or state.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created with artifacts in the state dir when local."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = state.artifact_root() + f"/{name}" if mlflow.get_tracking_uri().startswith(
        "sqlite") else None
    return client.create_experiment(name, artifact_location=location)


def code_version() -> dict[str, str]:
    """Package version plus git commit and dirty flag when running from a checkout."""
    tags = {"code.version": __version__}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return tags
    tags["code.git_commit"] = commit.stdout.strip()
    tags["code.git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    return tags


def safe_name(name: str) -> str:
    """``name`` with every character MLflow keys and file names may not hold replaced by _."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def redact(uri: str) -> str:
    """``uri`` with any password replaced, fit for logs and terminals."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Registration:
    name: str
    version: str
    alias: str
    previous_champion: str | None
    reason: str


def register(run_id: str, model_uri: str, name: str, test_mae: float) -> Registration:
    """Register ``model_uri`` as a new version of ``name`` and move the right alias to it."""
    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(name, model_uri, run_id=run_id).version
    run_tags = client.get_run(run_id).data.tags
    key = (run_tags.get(DATA_SHA_TAG), run_tags.get(SPLIT_TAG))

    champion = _champion(client, name)
    if champion is None:
        alias, reason, previous = CHAMPION, "first version for this model", None
    else:
        previous = str(champion.version)
        champ_run = client.get_run(champion.run_id)
        champ_key = (champ_run.data.tags.get(DATA_SHA_TAG), champ_run.data.tags.get(SPLIT_TAG))
        champ_mae = champ_run.data.metrics.get("test_mae", math.inf)
        if champ_key != key:
            alias = CHALLENGER
            reason = (f"champion v{previous} was evaluated on other data or another split; "
                      "promote explicitly to replace it")
        elif test_mae < champ_mae:
            alias = CHAMPION
            reason = f"test MAE {test_mae:.6g} beats champion v{previous} ({champ_mae:.6g})"
        else:
            alias = CHALLENGER
            reason = f"test MAE {test_mae:.6g} does not beat champion v{previous} ({champ_mae:.6g})"
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "alias_reason", reason)
    log.info("registered %s v%s as %s: %s", name, version, alias, reason)
    return Registration(name, str(version), alias, previous, reason)


def _drop_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Remove ``alias`` from ``name`` if it points at ``version``."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return
    if str(current.version) == str(version):
        client.delete_registered_model_alias(name, alias)


def _champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


@dataclass
class VersionRow:
    name: str
    version: str
    aliases: list[str]
    run_id: str
    test_mae: float | None
    data_sha256: str | None


def list_versions(name: str | None = None) -> list[VersionRow]:
    """Every version of every registered model (or of ``name``), newest first."""
    client = MlflowClient()
    names = [name] if name else [m.name for m in client.search_registered_models()]
    rows = []
    for model_name in names:
        for found in client.search_model_versions(f"name = '{model_name}'"):
            # search results leave aliases empty on some stores; a direct get fills them.
            v = client.get_model_version(model_name, found.version)
            run = client.get_run(v.run_id) if v.run_id else None
            rows.append(VersionRow(
                model_name, str(v.version), sorted(v.aliases or []), v.run_id or "",
                run.data.metrics.get("test_mae") if run else None,
                run.data.tags.get(DATA_SHA_TAG) if run else None,
            ))
    return sorted(rows, key=lambda r: (r.name, -int(r.version)))


def promote(name: str, version: str, alias: str = CHAMPION) -> str | None:
    """Point ``alias`` at ``version`` explicitly; returns the version it pointed to before."""
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ConfigError(f"model {name!r} has no version {version}; see `informerflow models`") \
            from exc
    previous = _champion(client, name) if alias == CHAMPION else None
    client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION:
        _drop_alias(client, name, CHALLENGER, version)  # one version is not both
    client.set_model_version_tag(name, version, "alias_reason", f"promoted to {alias} by hand")
    return str(previous.version) if previous else None


def compare_runs(run_ids: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """``{"params"|"metrics": {key: {run_id: value}}}`` for the given runs, side by side."""
    client = MlflowClient()
    table: dict[str, dict[str, dict[str, str]]] = {"params": {}, "metrics": {}}
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(f"no run with id {run_id!r} in {mlflow.get_tracking_uri()}") from exc
        for key, value in run.data.params.items():
            table["params"].setdefault(key, {})[run_id] = value
        for key, value in run.data.metrics.items():
            table["metrics"].setdefault(key, {})[run_id] = f"{value:.6g}"
    return table
