# The planning server on a CUDA build of PyTorch.
#
#   docker build -t wm-planning-server .
#   docker run --gpus all -p 8000:8000 -e WM_API_KEY=change-me wm-planning-server    # NVIDIA GPU host
#   docker run -p 8000:8000 -e WM_API_KEY=change-me wm-planning-server                # CPU-only host
#
# `--gpus all` needs NVIDIA's driver and container toolkit on the host; without them
# Docker refuses to start the container (exit 125, `could not select device driver ""
# with capabilities: [[gpu]]`): leave the flag out and the server runs on the CPU
# (WM_DEVICE=auto picks CUDA only when the container sees a GPU).
#
# Serves the project's default model (models/default/wall.pt, copied from the
# build context); mount another and point WM_MODEL at it to serve that one:
#   docker run --gpus all -p 8000:8000 -v $PWD/runs:/models -e WM_MODEL=/models/m.pt ...
#
# BASE contract (docs/deployment.md, "The base image"): `python` (>= 3.11: tomllib below)
# and `pip` on PATH, a pip allowed to install (a venv or a non-"externally managed"
# Python), `useradd`, and torch >= 2.6 already installed: the DINO-WM importer's
# restricted unpickler needs 2.6, and without a torch pip would resolve the project's
# torch>=2.6 from PyPI, a multi-GB CUDA build. The build checks torch before installing
# anything. Another CUDA/torch pairing: --build-arg BASE=pytorch/pytorch:<tag>; no Docker
# Hub: docker/base-debian.sh builds a CPU base from Debian's packages.
# --build-arg EXTRAS=test adds pytest, to run the suite inside the image
# (scripts/docker_check.sh builds, runs and tests the image end to end).
ARG BASE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
FROM ${BASE}
ARG EXTRAS=""

WORKDIR /app
# Dependencies first, from pyproject.toml alone: a code change reuses this layer.
# torch is already in the image and satisfies the project's torch>=2.6, so pip keeps it.
COPY pyproject.toml ./
RUN python -c "import sys, torch; v = torch.__version__.split('+')[0]; \
sys.exit(0 if tuple(map(int, v.split('.')[:2])) >= (2, 6) else 'BASE has torch ' + v + ', needs >= 2.6')" \
    || { echo 'The BASE image must already hold torch >= 2.6 (see the BASE contract at the top of this file).' >&2; exit 1; }
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in '${EXTRAS}'.split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && useradd --create-home --uid 1000 wm

# The code (and the default model): the only layers a code change rebuilds.
COPY . .
# The client package (clients/python) goes in beside the project: client_examples imports it.
RUN pip install --no-cache-dir --no-deps ./clients/python .
USER 1000

# Inside a container the server must listen beyond localhost; publish the
# port deliberately (-p) and set WM_API_KEY when it is reachable by others.
ENV WM_HOST=0.0.0.0 \
    WM_PORT=8000 \
    WM_DEVICE=auto \
    WM_MODEL=/app/models/default/wall.pt
EXPOSE 8000

# /health is 503 while the model loads, 200 once it serves; no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('WM_PORT', '8000'), timeout=4).status != 200)"]

# The address and port come from WM_HOST/WM_PORT (above), so `-e WM_HOST=127.0.0.1`
# with `--network host` keeps a container on the host's loopback.
CMD ["python", "-m", "server"]
