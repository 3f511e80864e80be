"""The MPC control loop, re-exported from its package, ``wm_client`` (clients/python).

Kept so that ``from client_examples.control_loop import ControlLoop`` works;
new code imports ``wm_client``.
"""

from __future__ import annotations

from client_examples.client import PlanningClient, PlanningError  # a clear error when wm_client is missing
from wm_client.control_loop import (
    ERROR_POLICIES,
    Camera,
    ControlLoop,
    ControlLoopError,
    LoopConfig,
    LoopReport,
    Policy,
    Robot,
    policy_for,
    to_rgb_uint8,
)

__all__ = [
    "ERROR_POLICIES", "Camera", "ControlLoop", "ControlLoopError", "LoopConfig", "LoopReport", "PlanningClient",
    "PlanningError", "Policy", "Robot", "policy_for", "to_rgb_uint8",
]
