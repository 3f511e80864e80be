"""World models (the DINO-WM-style `WorldModel`; LeWorldModel in `models.lewm`):
config, network, statistics, artifacts."""

from models.artifact import (DEFAULT_MODEL_PATH, ArtifactError, ModelNotFoundError, load_model,
                             read_artifact, resolve_device, save_model)
from models.config import WorldModelConfig
from models.inference import InferenceConfig
from models.stats import ActionCodec, NormStats
from models.world_model import Latent, WorldModel

__all__ = ["DEFAULT_MODEL_PATH", "ActionCodec", "ArtifactError", "InferenceConfig", "Latent", "ModelNotFoundError", "NormStats",
           "WorldModel", "WorldModelConfig", "load_model", "read_artifact", "resolve_device", "save_model"]
