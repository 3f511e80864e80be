"""Adapters from Isaac Sim / Isaac Lab objects to the control loop's camera and robot.

No Isaac import at module level: the adapters are duck-typed, so they import
(and are tested) anywhere; only ``ArticulationRobot.apply`` imports
``isaacsim``, inside Isaac Sim's Python. ``client_examples/isaac_sim_client.py``
is a runnable script built on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class IsaacCamera:
    """``isaacsim.sensors.camera.Camera``: ``get_rgba()`` is HxWx4 uint8 (numpy or
    warp), empty until the render product has produced a frame."""

    def __init__(self, camera: Any) -> None:
        self.camera = camera

    def read(self) -> Any:
        return self.camera.get_rgba()


class TiledCameraSource:
    """Isaac Lab ``TiledCamera``: ``data.output["rgb"]`` is (N, H, W, 3) on the GPU,
    uint8 (float in [0, 1] in older versions); the loop picks ``env_index``."""

    def __init__(self, camera: Any, env_index: int = 0, data_type: str = "rgb") -> None:
        self.camera, self.env_index, self.data_type = camera, env_index, data_type

    def read(self) -> Any:
        return self.camera.data.output[self.data_type][self.env_index]


class ArticulationRobot:
    """An articulation (``SingleArticulation`` or anything with the same two
    methods): proprio = joint positions (of ``joint_indices``); an action is
    a position target, absolute or a change from the current positions."""

    def __init__(self, articulation: Any, joint_indices: list[int] | None = None, mode: str = "absolute") -> None:
        if mode not in ("absolute", "delta"):
            raise ValueError(f"mode must be 'absolute' or 'delta', got {mode!r}")
        self.articulation, self.joint_indices, self.mode = articulation, joint_indices, mode

    def proprio(self) -> np.ndarray:
        q = np.asarray(self.articulation.get_joint_positions(joint_indices=self.joint_indices), dtype=np.float64)
        return q.reshape(-1)

    def apply(self, action: np.ndarray) -> None:
        from isaacsim.core.utils.types import ArticulationAction

        target = np.asarray(action, dtype=np.float32)
        if self.mode == "delta":
            target = self.proprio().astype(np.float32) + target
        self.articulation.apply_action(ArticulationAction(joint_positions=target, joint_indices=self.joint_indices))
