# The informerflow model server image: `python -m informerflow.serving` as user 1000.
#
#   docker build -t informerflow:0.1.0 .                               # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t informerflow:0.1.0-cu128 .   # CUDA torch
#   docker run -p 8080:8080 -v "$PWD/model:/mnt/models:ro" informerflow:0.1.0
#
# The default command serves the MLflow model directory at /mnt/models, where KServe's storage
# initializer puts it (see `informerflow deploy --target kserve`). Other arguments replace it,
# e.g. `docker run IMAGE --model-uri models:/NAME@champion --tracking-uri http://mlflow:5000`.
# Not built in CI: the development machine has no container engine.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# TORCH_VARIANT is the PyTorch wheel index and local version suffix: cpu, cu126, cu128, ...
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, so code changes reuse this layer. torch comes from the PyTorch index for
# the chosen variant; every other pin is taken from the lock file as it is.
COPY requirements.lock ./
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        "torch==${TORCH_VERSION}+${TORCH_VARIANT}" \
    && grep -v '^torch==' requirements.lock > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . && rm -rf /src

FROM ${PYTHON_IMAGE}
# A fixed numeric id: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --gid 1000 informer \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin informer
COPY --from=build /opt/venv /opt/venv

# Everything the server writes goes under /tmp, so the root filesystem can be read-only
# (the InferenceService mounts an emptyDir there).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    INFORMERFLOW_HOME=/tmp/informerflow \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080

# Binding 0.0.0.0 is needed inside a container: a port published by the engine or a Kubernetes
# probe arrives on the container's interface, never on its loopback.
ENTRYPOINT ["python", "-m", "informerflow.serving"]
CMD ["--model-uri", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
