# A base image that satisfies the Dockerfile's BASE contract (docs/deployment.md,
# "The base image"), built from Debian's packages and PyPI alone: for machines that
# cannot pull pytorch/pytorch from Docker Hub. Build it with docker/base-debian.sh,
# which makes the ROOTFS image with debootstrap and fills the build context.
#
# Contract met: python (3.11, Debian bookworm's) and pip on PATH in a venv that pip
# may install into, torch >= 2.6 present (a CPU build), the system's CA bundle
# (with any local CAs from ca-certificates/) trusted by pip.
ARG ROOTFS=wm-base-rootfs:bookworm
FROM ${ROOTFS}
ARG TORCH_VERSION=2.13.0

# Local CAs (e.g. a TLS-inspecting proxy's) first: pip must trust them to reach PyPI.
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# torch: a CPU wheel from wheels/ when the build context has one (no download),
# else PyTorch's CPU index. Never plain `pip install torch`: that is the multi-GB CUDA build.
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
    && if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then \
           pip install --no-cache-dir --find-links /tmp/wheels "torch==${TORCH_VERSION}"; \
       else \
           pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu \
               --extra-index-url https://pypi.org/simple; \
       fi \
    && rm -rf /tmp/wheels \
    && python -c "import torch; print('base: torch', torch.__version__)"
