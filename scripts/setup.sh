#!/usr/bin/env bash
# Create .venv and install the project with its extras ($EXTRAS, default `test`;
# the Makefile passes `test,pusht` so that `make test` runs the PushT tests too),
# and the client package clients/python (wm_client) beside it.
#
# torch goes in first, chosen for the machine:
#   * an NVIDIA GPU (nvidia-smi works): pip's default torch, a CUDA build;
#   * no GPU: a CPU build. A CPU wheel already on disk in pip's configured
#     find-links wins (no download); otherwise PyTorch's CPU index.
# The project's own `torch>=2.6` is then already satisfied, so installing the
# project pulls no second torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip >/dev/null 2>&1 || true

if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "setup: GPU found, installing the default (CUDA) torch"
    "${pip[@]}" install "torch>=2.6"
else
    echo "setup: no GPU, installing a CPU build of torch"
    # A CPU wheel already on disk in pip's configured find-links wins (no
    # multi-GB download); pin its exact version (with its +cpu label) so the
    # dependencies still come from the normal index.
    local_ver=$("${pip[@]}" install --dry-run --no-index --no-deps --only-binary=:all: \
        --quiet --report - torch 2>/dev/null \
        | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
        2>/dev/null || true)
    if [[ "$local_ver" == *+cpu* ]]; then
        "${pip[@]}" install -q "torch==${local_ver}"
    else
        "${pip[@]}" install -q "torch>=2.6" --index-url https://download.pytorch.org/whl/cpu \
            --extra-index-url https://pypi.org/simple
    fi
fi

extras=${EXTRAS:-test}
# The client package (clients/python: numpy, httpx, msgpack, pillow) is a
# separate distribution so that a simulator's Python can install it alone;
# client_examples and the tests import it. One pip command, both editable.
# It is not a named dependency of the project: it is not on PyPI, and a name
# that pip would look up there could be taken by someone else.
"${pip[@]}" install -q -e ./clients/python -e ".[${extras}]"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
