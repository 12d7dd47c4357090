"""The Kubeflow Pipelines v2 definition of a run, and its local execution.

One ``@dsl.pipeline`` chains five lightweight components. Locally, ``run_local`` executes it with
KFP's own SubprocessRunner in this Python environment; on a cluster, ``compile_pipeline`` writes
the IR YAML of the very same definition with a container image that has informerflow installed,
and ``submit_pipeline`` starts a run of it through a Kubeflow Pipelines API. On a cluster each
component takes the MLflow tracking URI and credentials from a Kubernetes Secret, named by a
pipeline parameter, so no value of the compiling machine ever lands in the YAML.
Each component is a thin shell: it imports informerflow inside its body (KFP ships only the
function's source) and calls the matching function of ``informerflow.steps``.
"""

# No ``from __future__ import annotations`` here: KFP reads the component signatures' types at
# decoration time and cannot resolve them from strings.
import logging
from dataclasses import dataclass
from pathlib import Path

from kfp import compiler, dsl, local
from kfp.dsl import Dataset, Input, Metrics, Model, Output

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "informerflow:0.1.0"
TRACKING_SECRET = "informerflow-tracking"
# Keys of the Kubernetes Secret each component reads its environment from, by reference: the
# compiled YAML names the Secret and the keys, never a value. The URI must be there; the
# credentials are needed only by servers and stores that ask for them.
SECRET_REQUIRED = ("MLFLOW_TRACKING_URI",)
SECRET_OPTIONAL = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                   "MLFLOW_TRACKING_TOKEN", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                   "AWS_SECRET_ACCESS_KEY")


def preprocess_op(config_json: str, data_sha256: str, dataset: Output[Dataset]) -> str:
    """Validate the input file and write the clean series plus the resolved config."""
    import json

    from informerflow.config import RunConfig
    from informerflow.steps import preprocess

    report = preprocess(RunConfig.from_dict(json.loads(config_json)), dataset.path,
                        expected_sha256=data_sha256)
    dataset.metadata.update({"rows": report["rows"], "freq": report["freq"],
                             "sha256": report["sha256"]})
    return json.dumps(report)


def train_op(dataset: Input[Dataset], model: Output[Model]) -> str:
    """Train Informer; returns the MLflow run id that the later steps add to."""
    from informerflow.steps import train_step

    run_id = train_step(dataset.path, model.path)
    model.metadata["mlflow_run_id"] = run_id
    return run_id


def evaluate_op(dataset: Input[Dataset], model: Input[Model], run_id: str,
                metrics: Output[Metrics]) -> str:
    """Score model and baselines on the test split; log the pyfunc model to the run."""
    import json

    from informerflow.steps import evaluate_step

    result = evaluate_step(dataset.path, model.path, run_id)
    for name, value in result["metrics"].items():
        metrics.log_metric(f"test_{name}", value)
    for baseline, values in result["baselines"].items():
        metrics.log_metric(f"{baseline}_mae", values["mae"])
    return json.dumps(result)


def register_op(run_id: str, model_name: str, evaluation: str) -> str:
    """Register the run's model; move ``champion`` only if it beats the current one."""
    import json
    from dataclasses import asdict

    from informerflow.steps import register_step

    del evaluation  # an input only so that register waits for evaluate
    return json.dumps(asdict(register_step(run_id, model_name or None)))


def deploy_op(registration: str, endpoint: str, port: int, enabled: bool) -> str:
    """Serve the champion on a local endpoint (a cluster uses ``deploy --target kserve``)."""
    import json

    from informerflow.steps import deploy_step

    if not enabled:
        return json.dumps({"skipped": True})
    return json.dumps(deploy_step(json.loads(registration), endpoint, port))


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline with every component running ``image`` (ignored by the local runner)."""

    def component(func):
        # KFP must not pip-install itself: locally we run in this venv, and on a cluster the
        # image carries kfp already, so installing at start-up would only add minutes.
        return dsl.component(func, base_image=image, install_kfp_package=False)

    preprocess, train, evaluate, register, deploy = map(
        component, (preprocess_op, train_op, evaluate_op, register_op, deploy_op))

    @dsl.pipeline(name="informerflow",
                  description="preprocess -> train -> evaluate -> register -> deploy")
    def informer_pipeline(config_json: str, data_sha256: str = "", model_name: str = "",
                          endpoint: str = "informer", port: int = 8080,
                          deploy_endpoint: bool = True,
                          tracking_secret: str = TRACKING_SECRET):
        # Only preprocess may come from the cache: it is a pure function of the config and the
        # data's content. Every later step writes to MLflow or starts a server, so a cached
        # result would point at a run or version made for an earlier pipeline run.
        pre = preprocess(config_json=config_json, data_sha256=data_sha256)
        trained = train(dataset=pre.outputs["dataset"]).set_caching_options(False)
        evaluated = evaluate(dataset=pre.outputs["dataset"], model=trained.outputs["model"],
                             run_id=trained.outputs["Output"]).set_caching_options(False)
        registered = register(run_id=trained.outputs["Output"], model_name=model_name,
                              evaluation=evaluated.outputs["Output"]).set_caching_options(False)
        deployed = deploy(registration=registered.output, endpoint=endpoint, port=port,
                          enabled=deploy_endpoint).set_caching_options(False)
        for task in (pre, trained, evaluated, registered, deployed):
            _env_from_secret(task, tracking_secret)

    return informer_pipeline


def _env_from_secret(task, secret):
    """Give ``task`` the tracking settings of Kubernetes Secret ``secret``, by reference.

    The local runner ignores this platform configuration: locally the steps inherit this
    process's environment instead.
    """
    try:
        from kfp import kubernetes
    except ImportError as exc:  # kfp-kubernetes is a separate distribution of kfp
        raise ImportError("the pipeline needs the kfp-kubernetes package (pip install "
                          "kfp-kubernetes==2.17.3, the version matching kfp)") from exc

    kubernetes.use_secret_as_env(task, secret, {k: k for k in SECRET_REQUIRED})
    kubernetes.use_secret_as_env(task, secret, {k: k for k in SECRET_OPTIONAL}, optional=True)


def compile_pipeline(path: str | Path, image: str = DEFAULT_IMAGE) -> Path:
    """Write the pipeline's KFP v2 IR YAML, its components running ``image``."""
    compiler.Compiler().compile(build_pipeline(image), str(path))
    return Path(path)


def run_local(config_json: str, pipeline_root: str | Path, model_name: str = "",
              endpoint: str = "informer", port: int = 8080, deploy: bool = True,
              cache: bool = False, data_sha256: str = "",
              cache_root: str | Path | None = None):
    """Execute the pipeline with KFP's local SubprocessRunner; returns the pipeline task.

    With ``cache``, a step whose component, image and inputs (the config and ``data_sha256``)
    match an earlier successful run is skipped and its outputs reused, as long as those output
    files still exist. KFP keeps the cache under ``pipeline_root`` unless ``cache_root`` says
    otherwise; a caller that gives each run its own root must pass a shared ``cache_root``.
    """
    # Known gap: the key covers the components' own source, not the informerflow library they
    # import, so after editing the library's ingestion code a --cache run may reuse a dataset
    # the old code wrote. Clear <state>/kfp_cache (or run without --cache) after such edits.
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=cache,
        cache_root=str(cache_root) if cache_root else None,
    )
    return build_pipeline()(config_json=config_json, data_sha256=data_sha256,
                            model_name=model_name, endpoint=endpoint, port=port,
                            deploy_endpoint=deploy)


@dataclass
class SubmittedRun:
    run_id: str
    experiment_id: str
    url: str


def submit_pipeline(host: str, config_json: str, image: str = DEFAULT_IMAGE,
                    experiment: str = "informerflow", run_name: str | None = None,
                    data_sha256: str = "", cache: bool = False, model_name: str = "",
                    tracking_secret: str = TRACKING_SECRET) -> SubmittedRun:
    """Compile the pipeline for ``image`` and start a run of it on the KFP API at ``host``.

    ``cache`` lets the cluster reuse preprocess outputs (the compiled default; later steps
    never are); without it every task of this run executes. The deploy step is off: a server
    started inside a step's pod would end with the pod, so a cluster serves with
    ``informerflow deploy --target kserve``. The steps read the tracking URI and credentials
    from Kubernetes Secret ``tracking_secret`` in the run's namespace (see ``SECRET_REQUIRED``
    and ``SECRET_OPTIONAL`` for its keys).

    Raises:
        PipelineError: the API could not be reached or refused the run.
    """
    import contextlib
    import io
    import tempfile
    import warnings

    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    from informerflow.errors import PipelineError

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # kfp.Client warns on every construction that it needs a v2 API; we only talk to one.
        warnings.simplefilter("ignore", FutureWarning)
        package = compile_pipeline(Path(tmp) / "informerflow.yaml", image)
        arguments = {"config_json": config_json, "data_sha256": data_sha256,
                     "model_name": model_name, "deploy_endpoint": False,
                     "tracking_secret": tracking_secret}
        printed = io.StringIO()  # the client prints a "Run details" link; we return it instead
        try:
            client = kfp.Client(host=host)
            with contextlib.redirect_stdout(printed):
                result = client.create_run_from_pipeline_package(
                    str(package), arguments=arguments, run_name=run_name,
                    experiment_name=experiment, enable_caching=None if cache else False)
        except ApiException as exc:
            raise PipelineError(f"Kubeflow Pipelines at {host} refused the run: HTTP "
                                f"{exc.status} {exc.reason}: {str(exc.body)[:500]}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PipelineError(f"cannot reach Kubeflow Pipelines at {host}: {exc}; check "
                                "--host (e.g. a port-forward to ml-pipeline-ui)") from exc
    run = result.run_info
    log.info("submitted run %s: %s", run.run_id, printed.getvalue().strip())
    return SubmittedRun(run.run_id, run.experiment_id,
                        f"{host.rstrip('/')}/#/runs/details/{run.run_id}")
