"""A 2-D point agent in a room split by a wall with a door, rendered to RGB.

Modelled on DINO-WM's "wall" task: the agent starts on either side of a
vertical wall and must reach a goal position, possibly on the other side,
which it can only do through the door. The environment is deterministic (no
noise) and cheap to render, so it serves for collecting training data and
for closed-loop evaluation of a planner.

Coordinates are continuous pixels of the rendered image: ``x`` is the column,
``y`` the row, the origin is the top-left corner, and pixel ``(row i, col j)``
covers ``[j, j + 1) x [i, i + 1)`` with its centre at ``(j + 0.5, i + 0.5)``.
The state is the agent's centre ``(x, y)``.

Frameskip: the environment has no notion of a world model. A model trained
with ``frameskip = k`` (DINO-WM's default, and ours, is
``DEFAULT_FRAMESKIP = 5``) treats ``k`` consecutive env steps as one *model
step* whose action is the ``k`` raw actions concatenated; the caller that
executes a plan steps this env ``k`` times per model step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

DEFAULT_FRAMESKIP = 5
DEFAULT_SUCCESS_TOL = 3.0  # px; about one agent radius, DINO-WM's wall threshold scale

# Colours (RGB uint8) are fixed so that a trained model's images stay valid:
# light floor, dark wall, red agent; the three differ in every channel's
# contrast so the agent is never confused with the wall.
BACKGROUND_RGB = (240, 240, 240)
WALL_RGB = (70, 70, 70)
AGENT_RGB = (220, 30, 30)


@dataclass(frozen=True)
class WallLayout:
    """Geometry and motion limits of the wall room (all lengths in pixels).

    Args:
        size: side of the square room and of the rendered image.
        wall_x0: left face of the wall (the wall spans ``[wall_x0, wall_x1]``
            in x, the whole height of the room except the door).
        wall_x1: right face of the wall.
        door_center_y: y of the door's centre; the door is fixed (DINO-WM
            randomises it per episode; fixing it keeps the state 2-D).
        door_height: opening of the door; must exceed the agent's diameter or
            the two sides would not be connected.
        agent_radius: radius of the agent disc, used for drawing and
            collision (the disc may touch but never overlap the wall).
        max_step: per-axis bound of one env step's displacement; actions are
            clipped to ``[-max_step, max_step]``.
        substep: length of a collision sub-step; a move is split into
            sub-steps no longer than this and stops at the last free one, so
            the agent ends at most ``substep`` short of an obstacle. It must be
            shorter than the wall thickness plus the agent's diameter so that
            no sub-step can jump over the wall.
    """

    size: int = 64
    wall_x0: float = 30.0
    wall_x1: float = 34.0
    door_center_y: float = 32.0
    door_height: float = 12.0
    agent_radius: float = 3.0
    max_step: float = 2.0
    substep: float = 0.25

    def __post_init__(self) -> None:
        r = self.agent_radius
        if self.size < 8:
            raise ValueError(f"size must be >= 8 px, got {self.size}")
        if r <= 0:
            raise ValueError(f"agent_radius must be > 0, got {r}")
        if not (2 * r <= self.wall_x0 < self.wall_x1 <= self.size - 2 * r):
            raise ValueError(
                "the wall must leave room for the agent on both sides: need "
                f"{2 * r} <= wall_x0 < wall_x1 <= {self.size - 2 * r}, got "
                f"wall_x0={self.wall_x0}, wall_x1={self.wall_x1}"
            )
        if self.door_height <= 2 * r:
            raise ValueError(
                f"door_height={self.door_height} must exceed the agent's diameter "
                f"{2 * r}, or the agent can never pass"
            )
        if not (0 <= self.door_y0 and self.door_y1 <= self.size):
            raise ValueError(
                f"door [{self.door_y0}, {self.door_y1}] must lie inside [0, {self.size}]"
            )
        if self.max_step <= 0:
            raise ValueError(f"max_step must be > 0, got {self.max_step}")
        thickness = self.wall_x1 - self.wall_x0
        if not (0 < self.substep < thickness + 2 * r):
            raise ValueError(
                f"substep must be in (0, {thickness + 2 * r}) so a sub-step cannot "
                f"tunnel through the wall, got {self.substep}"
            )

    @property
    def door_y0(self) -> float:
        """Top edge (smaller y) of the door."""
        return self.door_center_y - self.door_height / 2

    @property
    def door_y1(self) -> float:
        """Bottom edge (larger y) of the door."""
        return self.door_center_y + self.door_height / 2

    @property
    def wall_center_x(self) -> float:
        """x that separates the 'left' side from the 'right' side."""
        return (self.wall_x0 + self.wall_x1) / 2


class Observation(TypedDict):
    """What ``reset`` and ``step`` return (DINO-WM's observation dict)."""

    visual: np.ndarray  # (size, size, 3) uint8 RGB
    proprio: np.ndarray  # (2,) float32, the agent position


def success_mask(
    states: np.ndarray, goal_states: np.ndarray, tol: float = DEFAULT_SUCCESS_TOL
) -> np.ndarray:
    """Vectorised success test: Euclidean distance below ``tol``.

    Args:
        states: (..., 2) agent positions.
        goal_states: (..., 2) goal positions, broadcast against ``states``.
        tol: distance threshold in pixels.
    Returns:
        (...) bool array.
    """
    diff = np.asarray(states, dtype=np.float64) - np.asarray(goal_states, dtype=np.float64)
    return np.linalg.norm(diff, axis=-1) < tol


def is_success(
    state: np.ndarray, goal_state: np.ndarray, tol: float = DEFAULT_SUCCESS_TOL
) -> bool:
    """True when the (2,) ``state`` is within ``tol`` px of the (2,) ``goal_state``."""
    return bool(success_mask(state, goal_state, tol))


class WallEnv:
    """The wall room: deterministic, seedable, rendered with numpy.

    ``reset(seed, state) -> Observation`` and ``step(action) -> (Observation,
    info)``; there is no reward or termination (goal-reaching is judged by the
    caller with ``is_success``), so the gymnasium 5-tuple would only carry
    constants. ``info`` holds ``state`` (2,) float64, ``action`` (the clipped
    action actually requested, (2,) float64) and ``blocked`` (True when a
    wall or the room's edge stopped part of the move).
    """

    action_dim = 2
    proprio_dim = 2
    state_dim = 2

    def __init__(self, layout: WallLayout | None = None, seed: int | None = None) -> None:
        self.layout = layout if layout is not None else WallLayout()
        self._rng = np.random.default_rng(seed)
        size = self.layout.size
        self._centers = np.arange(size, dtype=np.float64) + 0.5  # (size,) pixel centres
        self._background = self._draw_background()  # (size, size, 3) uint8, drawn once
        self._agent_rgb = np.asarray(AGENT_RGB, dtype=np.float32)
        self._pos = self.sample_free_state(self._rng)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of every rendered frame."""
        return (self.layout.size, self.layout.size, 3)

    # --- state ---------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """The agent position, a (2,) float64 copy."""
        return self._pos.copy()

    def set_state(self, state: np.ndarray) -> None:
        """Place the agent at (2,) ``state``; it must be finite and in free space."""
        self._pos = self._validate_state(state)

    def proprio(self) -> np.ndarray:
        """Proprioception: the agent position, (2,) float32."""
        return self._pos.astype(np.float32)

    def reset(self, seed: int | None = None, state: np.ndarray | None = None) -> Observation:
        """Start an episode at ``state``, or at a uniformly drawn free state.

        ``seed`` reseeds the env's generator first, so ``reset(seed=s)``
        always yields the same start.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._pos = (
            self._validate_state(state) if state is not None else self.sample_free_state(self._rng)
        )
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[Observation, dict]:
        """Move by the (2,) displacement ``action`` (px), clipped per axis to ``max_step``."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be a finite (2,) array, got shape {a.shape}: {a!r}")
        a = np.clip(a, -self.layout.max_step, self.layout.max_step)
        x, y = self._move(float(self._pos[0]), float(self._pos[1]), float(a[0]), float(a[1]))
        target = self._pos + a
        self._pos = np.array([x, y], dtype=np.float64)
        blocked = bool(np.any(np.abs(self._pos - target) > 1e-9))
        return self._observe(), {"state": self._pos.copy(), "action": a, "blocked": blocked}

    # --- geometry ------------------------------------------------------------

    def is_free(self, states: np.ndarray) -> np.ndarray:
        """Vectorised free-space test for (..., 2) agent centres; returns (...) bool.

        Free means the agent disc lies inside the room and does not overlap
        either wall segment (touching is allowed).
        """
        s = np.asarray(states, dtype=np.float64)
        x, y = s[..., 0], s[..., 1]
        L, r = self.layout, self.layout.agent_radius
        inside = (x >= r) & (x <= L.size - r) & (y >= r) & (y <= L.size - r)
        # Disc-rectangle overlap: distance from the centre to the nearest point
        # of each wall segment (upper: y <= door_y0, lower: y >= door_y1).
        dx = np.maximum(np.maximum(L.wall_x0 - x, x - L.wall_x1), 0.0)
        dy_upper = np.maximum(y - L.door_y0, 0.0)
        dy_lower = np.maximum(L.door_y1 - y, 0.0)
        clear = (dx**2 + dy_upper**2 >= r * r) & (dx**2 + dy_lower**2 >= r * r)
        return inside & clear

    def sample_free_state(self, rng: np.random.Generator) -> np.ndarray:
        """A (2,) float64 state drawn uniformly over free space (rejection sampling)."""
        L, r = self.layout, self.layout.agent_radius
        # The wall takes well under half of the room, so 64 tries per round
        # almost always suffice; the loop bound only guards a broken layout.
        for _ in range(100):
            cand = rng.uniform(r, L.size - r, size=(64, 2))
            ok = np.flatnonzero(self.is_free(cand))
            if ok.size:
                return cand[ok[0]].copy()
        raise RuntimeError(f"could not sample a free state in layout {L}")

    def side(self, state: np.ndarray) -> str:
        """'left' or 'right' of the wall's centre line for a (2,) state."""
        return "left" if float(np.asarray(state)[0]) < self.layout.wall_center_x else "right"

    def is_success(
        self, state: np.ndarray, goal_state: np.ndarray, tol: float = DEFAULT_SUCCESS_TOL
    ) -> bool:
        """See the module-level ``is_success``."""
        return is_success(state, goal_state, tol)

    # --- rendering -----------------------------------------------------------

    def render(self, state: np.ndarray | None = None) -> np.ndarray:
        """RGB frame (size, size, 3) uint8 of the current state, or of ``state``.

        Rendering another state (e.g. a goal) leaves the env untouched. The
        disc is anti-aliased (coverage ~ clip(r + 0.5 - d, 0, 1)) so that
        sub-pixel positions are visible to an image encoder.
        """
        x, y = (self._pos if state is None else np.asarray(state, dtype=np.float64))[:2]
        img = self._background.copy()
        L, r = self.layout, self.layout.agent_radius
        # Only the disc's bounding box changes; a full-image distance grid
        # would cost ~50x more.
        c0, c1 = max(int(x - r - 1), 0), min(int(x + r + 2), L.size)
        r0, r1 = max(int(y - r - 1), 0), min(int(y + r + 2), L.size)
        dx = self._centers[c0:c1] - x  # (w,)
        dy = self._centers[r0:r1] - y  # (h,)
        dist = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)  # (h, w)
        alpha = np.clip(r + 0.5 - dist, 0.0, 1.0)[..., None]  # (h, w, 1)
        patch = img[r0:r1, c0:c1].astype(np.float32)  # (h, w, 3)
        img[r0:r1, c0:c1] = (patch + alpha * (self._agent_rgb - patch) + 0.5).astype(np.uint8)
        return img

    # --- internals -----------------------------------------------------------

    def _observe(self) -> Observation:
        return {"visual": self.render(), "proprio": self.proprio()}

    def _validate_state(self, state: np.ndarray) -> np.ndarray:
        s = np.array(state, dtype=np.float64)  # copy: the caller keeps its array
        if s.shape != (2,):
            raise ValueError(f"state must have shape (2,) = (x, y), got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"state must be finite, got {s!r}")
        if not bool(self.is_free(s)):
            raise ValueError(
                f"state {s.tolist()} is not free space: the agent (radius "
                f"{self.layout.agent_radius}) would overlap the wall or leave the room"
            )
        return s

    def _free(self, x: float, y: float) -> bool:
        # Scalar twin of is_free: called ~10 times per step, where numpy's
        # per-call overhead would dominate.
        L, r = self.layout, self.layout.agent_radius
        if x < r or x > L.size - r or y < r or y > L.size - r:
            return False
        dx = max(L.wall_x0 - x, x - L.wall_x1, 0.0)
        if dx >= r:
            return True
        dy_upper = max(y - L.door_y0, 0.0)
        dy_lower = max(L.door_y1 - y, 0.0)
        return dx * dx + dy_upper * dy_upper >= r * r and dx * dx + dy_lower * dy_lower >= r * r

    def _move(self, x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
        """Sub-stepped move with sliding: a blocked sub-step keeps its free axis.

        Sliding along the wall (rather than stopping dead) lets a diagonal
        push find the door, as a point mass on a frictionless wall would; the
        blocked axis is retried every sub-step, so a slide that reaches the
        door turns into it within the same step.
        """
        n = max(1, math.ceil(max(abs(dx), abs(dy)) / self.layout.substep))
        sx, sy = dx / n, dy / n
        for _ in range(n):
            if self._free(x + sx, y + sy):
                x, y = x + sx, y + sy
            elif sx != 0.0 and self._free(x + sx, y):
                x += sx
            elif sy != 0.0 and self._free(x, y + sy):
                y += sy
            else:
                break
        return x, y

    def _draw_background(self) -> np.ndarray:
        L = self.layout
        img = np.empty((L.size, L.size, 3), dtype=np.uint8)
        img[:] = BACKGROUND_RGB
        c = self._centers
        in_wall_x = (c >= L.wall_x0) & (c <= L.wall_x1)  # (size,) columns
        in_door_y = (c >= L.door_y0) & (c <= L.door_y1)  # (size,) rows
        img[np.ix_(~in_door_y, in_wall_x)] = WALL_RGB
        return img
