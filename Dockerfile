# The planning server on a CUDA build of PyTorch.
#
#   docker build -t wm-planning-server .
#   docker run --gpus all -p 8000:8000 -e WM_API_KEY=change-me wm-planning-server
#
# Serves the project's default model (models/default/wall.pt, copied from the
# build context); mount another and point WM_MODEL at it to serve that one:
#   docker run --gpus all -p 8000:8000 -v $PWD/runs:/models -e WM_MODEL=/models/m.pt ...
# Without a GPU it falls back to the CPU (WM_DEVICE=auto).
#
# torch >= 2.6: the DINO-WM importer's restricted unpickler needs it, and the
# tests run on it. Another CUDA/torch pairing: --build-arg BASE=pytorch/pytorch:<tag>.
# --build-arg EXTRAS=test adds pytest, to run the suite inside the image.
ARG BASE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
FROM ${BASE}
ARG EXTRAS=""

WORKDIR /app
# Dependencies first, from pyproject.toml alone: a code change reuses this layer.
# torch is already in the image and satisfies the project's torch>=2.6, so pip keeps it.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in '${EXTRAS}'.split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && python -c "import torch; v = torch.__version__.split('+')[0]; assert tuple(map(int, v.split('.')[:2])) >= (2, 6), v" \
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

CMD ["python", "-m", "server", "--host", "0.0.0.0"]
