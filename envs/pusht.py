"""gym-pusht behind the interface of this project's envs: exact state, small RGB renders.

gym-pusht (``pip install -e .[pusht]``: pymunk physics, pygame drawing,
headless on the CPU) simulates a disc agent pushing a T-shaped block on a
512 x 512 table. Its native action is an *absolute* target position for the
agent, tracked by a PD controller for 10 physics steps (0.1 s). Here, as in
DINO-WM's PushT, an action is the target *relative* to the agent's current
position, in table pixels, clipped per axis to ``[-max_step, max_step]``:
actions then look alike wherever the agent is, which a small model learns
more easily.

State (7,) float64, as in DINO-WM: agent x, y, block x, y, block angle
(radians, wrapped to [0, 2 pi)), agent vx, vy. Proprio = the agent position.
``set_state`` writes it exactly: gym-pusht's own ``reset_to_state`` sets the
block angle *after* its position, which rotates the block about its centre
of gravity and moves it away from the requested position, then steps the
physics once; here the angle goes first, then the position, and the shapes'
bounding boxes are refreshed without stepping.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from envs.wall import Observation

DEFAULT_IMAGE_SIZE = 64
DEFAULT_MAX_STEP = 40.0  # px of the 512 px table per env step (target offset)
DEFAULT_FRAMESKIP = 5  # DINO-WM's PushT frameskip
POSITION_TOL = 20.0  # DINO-WM: ||agent + block position error|| < 20
ANGLE_TOL = math.pi / 9  # DINO-WM: block angle error < pi / 9
TABLE = 512.0


def angle_error(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """|a - b| wrapped to [0, pi]."""
    d = np.mod(np.asarray(a) - np.asarray(b), 2 * np.pi)
    return np.minimum(d, 2 * np.pi - d)


def state_errors(state: np.ndarray, goal: np.ndarray) -> tuple[float, float]:
    """(position error of agent and block together, block angle error) between two (>=5,) states."""
    pos = float(np.linalg.norm(np.asarray(state)[:4] - np.asarray(goal)[:4]))
    return pos, float(angle_error(state[4], goal[4]))


def is_success(state: np.ndarray, goal: np.ndarray) -> bool:
    """DINO-WM's PushT success: position error < 20 and angle error < pi / 9."""
    pos, ang = state_errors(state, goal)
    return pos < POSITION_TOL and ang < ANGLE_TOL


class PushTEnv:
    """One gym-pusht table, reset to exact states, rendered at ``image_size`` px.

    Args:
        image_size: side of the RGB observation in pixels (64 for the small
            models here; DINO-WM renders 224).
        max_step: per-axis bound of a relative action, in table pixels.
    """

    state_dim = 7
    action_dim = 2
    proprio_dim = 2

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE, max_step: float = DEFAULT_MAX_STEP) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen; no display needed
        from gym_pusht.envs.pusht import PushTEnv as GymPushT

        self.image_size, self.max_step = image_size, max_step
        self.image_shape = (image_size, image_size, 3)
        self._env = GymPushT(obs_type="state", render_mode="rgb_array",
                             observation_width=image_size, observation_height=image_size)
        self._env.reset(seed=0)

    # -- state ------------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        e = self._env
        return np.array([*e.agent.position, *e.block.position, e.block.angle % (2 * np.pi),
                         *e.agent.velocity], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape[0] not in (5, 7) or not np.all(np.isfinite(s)):
            raise ValueError(f"state must be 5 or 7 finite numbers (agent xy, block xy, angle[, agent vxy]), got {s}")
        e = self._env
        e.agent.position = (s[0], s[1])
        e.agent.velocity = (s[5], s[6]) if s.shape[0] == 7 else (0.0, 0.0)
        e.block.velocity, e.block.angular_velocity = (0.0, 0.0), 0.0
        # Angle first: setting it rotates the body about its centre of gravity,
        # which would move a position written before it.
        e.block.angle = s[4]
        e.block.position = (s[2], s[3])
        for body in (e.agent, e.block):
            e.space.reindex_shapes_for_body(body)  # refresh bounding boxes for the next collision check

    def sample_state(self, rng: np.random.Generator, near: float | None = 120.0) -> np.ndarray:
        """A start state like gym-pusht's reset (block in [100, 400]^2, any angle), with the
        agent within ``near`` px of the block (None: anywhere in [50, 450]^2) and clear of it."""
        while True:
            block = rng.uniform(100, 400, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            if near is None:
                agent = rng.uniform(50, 450, size=2)
            else:
                agent = np.clip(block + rng.uniform(-near, near, size=2), 30, TABLE - 30)
            state = np.array([*agent, *block, angle, 0.0, 0.0])
            self.set_state(state)
            if not self._agent_overlaps_block():
                return state

    def _agent_overlaps_block(self) -> bool:
        e = self._env
        circle = next(iter(e.agent.shapes))
        return any(circle.shapes_collide(shape).points for shape in e.block.shapes)

    # -- stepping and rendering -------------------------------------------------

    def reset(self, state: np.ndarray) -> Observation:
        self.set_state(state)
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[Observation, dict[str, Any]]:
        """Move the agent's target by ``action`` (clipped) from its position; 10 physics steps."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -self.max_step, self.max_step)
        target = np.clip(np.asarray(self._env.agent.position) + a, 0.0, TABLE)
        self._env.step(target)
        return self.observe(), {"action": a, "state": self.get_state()}

    def render(self) -> np.ndarray:
        """(image_size, image_size, 3) uint8 RGB of the current state."""
        return np.ascontiguousarray(self._env._render(visualize=False))

    def proprio(self) -> np.ndarray:
        return np.asarray(self._env.agent.position, dtype=np.float32)

    def observe(self) -> Observation:
        return {"visual": self.render(), "proprio": self.proprio()}
