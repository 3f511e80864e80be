"""Client for the world-model planning server: HTTP client, wire format, MPC control loop.

Depends on numpy, httpx, msgpack and pillow only (no torch, no server code),
so it installs into a simulator's own Python:

    pip install ./clients/python            # from the repository root

    from wm_client import PlanningClient, ControlLoop, LoopConfig
"""

from wm_client.client import JSON, MSGPACK, Frame, PlanningClient, PlanningError
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

__version__ = "0.1.0"

__all__ = [
    "ERROR_POLICIES", "JSON", "MSGPACK", "Camera", "ControlLoop", "ControlLoopError", "Frame", "LoopConfig",
    "LoopReport", "PlanningClient", "PlanningError", "Policy", "Robot", "policy_for", "to_rgb_uint8",
]
