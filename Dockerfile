# One image for every role of the A3C system; the command picks the role:
#   docker run IMAGE learner | worker | evaluator     (the entrypoint is the `a3c` CLI)
#
# torch is the CPU build. Online (the default) pip takes it from PyTorch's CPU wheel index, so a
# build never pulls a multi-GB CUDA build. Offline, fill wheelhouse/ first
# (deploy/scripts/wheelhouse.sh) and build with
#   --build-arg PIP_INSTALL_ARGS="--no-index --find-links /wheelhouse"
# BASE_IMAGE may be any Debian-based image with python3 >= 3.11 and its venv module
# (deploy/scripts/base-image.sh makes one where no registry can be reached).
ARG BASE_IMAGE=python:3.11-slim

# --- requirements: the runtime dependencies, read from pyproject.toml -------------------------
FROM ${BASE_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" \
        > /requirements.txt

# --- deps: a virtual environment with the dependencies only ----------------------------------
FROM ${BASE_IMAGE} AS deps
ARG PIP_INSTALL_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
COPY wheelhouse/ /wheelhouse/
# The slow layer (torch): its cache key is the list of dependencies alone, so neither a source
# edit nor another change to pyproject.toml (version, dev tools, lint settings) rebuilds it.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install ${PIP_INSTALL_ARGS} -r /tmp/requirements.txt

# --- wheel: the project itself, as a wheel ----------------------------------------------------
FROM deps AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common/ common/
COPY services/ services/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# --- runtime: the venv on a clean base, run as an unprivileged user -------------------------
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/a3c \
        --shell /usr/sbin/nologin a3c \
    && mkdir -p /data/checkpoints /data/eval \
    && chown -R a3c:a3c /data
# Two layers: the dependencies (about 1 GB, cached until they change), then the
# project (a few hundred kB, rebuilt on a source edit).
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --disable-pip-version-check /tmp/dist/*.whl \
    && rm -rf /tmp/dist
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    A3C_HOST=0.0.0.0 \
    A3C_METRICS_HOST=0.0.0.0 \
    A3C_METRICS_PORT=9100 \
    A3C_LOG_FORMAT=json \
    A3C_CHECKPOINT_DIR=/data/checkpoints
USER 10001:10001
WORKDIR /home/a3c
# 5555 gradients (learner ROUTER), 5556 weights (learner PUB), 9100 /metrics and /healthz.
EXPOSE 5555 5556 9100
# /healthz answers 503 when the service's main loop has stalled.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('A3C_METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["a3c"]
CMD ["--help"]
