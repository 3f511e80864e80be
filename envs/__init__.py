"""Environments and trajectory datasets for training and evaluating world models."""

from envs.dataset import (
    FORMAT_VERSION,
    DatasetError,
    Episode,
    TrajectoryDataset,
    load_dataset,
    write_dataset,
)
from envs.wall import (
    AGENT_RGB,
    BACKGROUND_RGB,
    DEFAULT_FRAMESKIP,
    DEFAULT_SUCCESS_TOL,
    WALL_RGB,
    Observation,
    WallEnv,
    WallLayout,
    is_success,
    success_mask,
)

__all__ = [
    "AGENT_RGB",
    "BACKGROUND_RGB",
    "DEFAULT_FRAMESKIP",
    "DEFAULT_SUCCESS_TOL",
    "FORMAT_VERSION",
    "WALL_RGB",
    "DatasetError",
    "Episode",
    "Observation",
    "TrajectoryDataset",
    "WallEnv",
    "WallLayout",
    "is_success",
    "load_dataset",
    "success_mask",
    "write_dataset",
]
