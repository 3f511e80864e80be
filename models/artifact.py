"""Model artifacts: one `.pt` file with config, weights and train-split statistics.

Layout (a dict of plain containers and tensors, so `torch.load(weights_only=True)`
reads it without unpickling any code):

    format          "wm-planning-server/world-model"
    format_version  1
    config          WorldModelConfig.to_dict()
    state_dict      the network's weights
    stats           NormStats.to_dict(): action/proprio mean+std and provenance
    metadata        free-form JSON-able facts (training run, command, wall time)
    family          "world_model" (absent in older files) or "lewm": which class to build

Writes are atomic (temp file + rename): a crash never leaves half a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.config import WorldModelConfig
from models.inference import InferenceConfig
from models.stats import NormStats
from models.world_model import WorldModel

if TYPE_CHECKING:
    from models.lewm.model import LeWM

log = logging.getLogger(__name__)

FORMAT = "wm-planning-server/world-model"
FORMAT_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "default" / "wall.pt"
# payload["family"]: which model class the config and weights build (absent in older artifacts: the
# DINO-WM-style `WorldModel`). Each family is one interface to the planner (models/lewm/model.py).
WORLD_MODEL_FAMILY = "world_model"
FAMILIES = (WORLD_MODEL_FAMILY, "lewm")


class ArtifactError(ValueError):
    """The file is not a usable model artifact; the message says why."""


class ModelNotFoundError(FileNotFoundError):
    pass


def save_model(model: WorldModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # fp32 on disk whatever the model computes in (a cast-bf16 model saves fp32 weights)
    state = {k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "family": getattr(model.config, "family", WORLD_MODEL_FAMILY), "config": model.config.to_dict(),
               "state_dict": state, "stats": model.stats.to("cpu").to_dict(), "metadata": metadata or {}}
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an artifact is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, 64 hex digits, read in 1 MiB blocks (checkpoints run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(path: str | Path) -> str:
    """An artifact's identity: the first 32 hex digits of its SHA-256 (config, weights and statistics
    are all in the bytes). The server reports it; a subgoal graph records the one it was built with,
    so a server can refuse another model's graph."""
    return file_sha256(path)[:32]


def read_artifact(path: str | Path) -> dict[str, Any]:
    """Load and check an artifact's payload (tensors on CPU), without building the model."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"no model artifact at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a safe artifact"
        raise ArtifactError(f"{path} could not be read as a weights-only torch file: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a {FORMAT} artifact (format={payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format_version {payload.get('format_version')}; this code reads {FORMAT_VERSION}")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise ArtifactError(f"{path} has no {key!r}")
    if not payload.get("stats"):
        raise ArtifactError(
            f"{path} has no action/proprio normalisation statistics. A model must carry the mean and std "
            "of its training split; the server never recomputes them (see README, 'Statistics').")
    return payload


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu", dtype: str = "fp32",
               compile: bool = False, inference: InferenceConfig | None = None) -> WorldModel | LeWM:
    """Load an artifact into an eval-mode model with gradients off: a `WorldModel`, or a
    `models.lewm.LeWM` for an artifact of family "lewm" (the same planner interface).

    path: None serves the shipped default model (`DEFAULT_MODEL_PATH`).
    dtype: "fp32" | "bf16" | "fp16", the precision encode and rollout compute
        in (outputs stay fp32); compile: torch.compile the rollout, falling
        back to eager with a warning. `inference` (an InferenceConfig) gives
        all options at once, the strategy included, and wins over both.
        See models/inference.py. Raises ValueError if the device cannot
        compute in `dtype`.
    """
    if path is None:
        path = DEFAULT_MODEL_PATH
        if not path.is_file():
            raise ModelNotFoundError(
                f"the shipped default model is missing ({path}); train it with the command in the README "
                "or pass --model PATH")
    payload = read_artifact(path)
    family = payload.get("family", WORLD_MODEL_FAMILY)
    if family not in FAMILIES:
        raise ArtifactError(f"{path} holds a model of family {family!r}; this code builds {FAMILIES}")
    try:
        if family == "lewm":
            from models.lewm.model import LeWM  # models.lewm builds on this module
            from models.lewm.config import LeWMConfig
            config, model_class = LeWMConfig.from_dict(payload["config"]), LeWM
        else:
            config, model_class = WorldModelConfig.from_dict(payload["config"]), WorldModel
        stats = NormStats.from_dict(payload["stats"])
        model = model_class(config, stats)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not match the config: {exc}") from exc
    model = model.to(device).eval().requires_grad_(False)
    model.metadata = payload.get("metadata", {})
    model.configure_inference(inference or InferenceConfig(dtype=dtype, compile=compile))
    log.info("loaded %s (%d parameters) from %s on %s", config.name, model.num_parameters(), path, device)
    return model


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
