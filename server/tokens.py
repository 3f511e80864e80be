"""Stateless MPC: the warm-start state travels with the client as a token.

Every plan and replan response carries ``mpc_state``, a compact token that
holds what the next warm start needs: the plan in model space, the planner
settings it was made with, the goal's identity, the model's identity and
its creation time. A replan may send it instead of ``session_id``, so any
replica of a fleet can serve any step of an episode and a restarted one
loses nothing.

Wire form: ``base64url(msgpack(payload) + mac)``, where mac is the first 16
bytes of HMAC-SHA256 over the payload, keyed by the model's identity and the
server's ``token_secret``. A token from another model, another version of
this format, or one changed in transit is refused with a coded 4xx. Without a
secret the MAC binds a token to the model and catches corruption, but anyone
who has the model file could mint one; set ``WM_TOKEN_SECRET`` (the same on
every replica) to make them unforgeable. Either way a token is validated like
any input: its plan must be finite numbers of the right shape and its planner
settings pass the same checks and limits as a request's overrides.

Goal identity: the SHA-256 of the goal frame as decoded (pixels, shape,
dtype), its proprio and the model's identity. The goal's latent is not in the
token (at DINO-WM size it is ~300 KB); each replica keeps recent goal latents
in an LRU cache keyed by that identity, and a replica that does not hold it
answers 409 ``mpc_state.goal_unknown``: the client resends the replan with
its goal frame (``goal``, ``goal_proprio``). Clients that would rather never
see that round trip send the goal with every stateless replan.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import torch

from planning import PlannerConfig, warm_start
from server.errors import ApiError
from server.planner import PlannerLimits, resolve

VERSION = 1
_MAC_BYTES = 16


@dataclass(frozen=True)
class MPCState:
    """The one warm-start state of an episode, kept in a server-side session or carried in a token.

    config: the planner settings the episode plans with. goal_id: the goal's content identity
    (`goal_identity`). plan: (H, A) float32, the last plan in the model's normalised space.
    elites: (e, H, A) its kept elites (iCEM), or None. created: when it was made (time.time()).
    """

    config: PlannerConfig
    goal_id: str
    plan: np.ndarray
    elites: np.ndarray | None = None
    created: float = dataclasses.field(default_factory=time.time)

    def warm_start(self, executed_steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next plan's start after `executed_steps` model steps: mean (1, H, A) and elites
        (1, e, H, A) or None, shifted with the last action repeated (`planning.warm_start`)."""
        h = self.config.horizon
        mean = warm_start(torch.from_numpy(self.plan), executed_steps, h).unsqueeze(0)
        elites = None if self.elites is None else warm_start(torch.from_numpy(self.elites), executed_steps, h)[None]
        return mean, elites


class TokenCodec:
    """Issues and reads tokens for one model (``model_id``) under an optional secret. A token's
    planner settings are checked as a request's are: over `base`, within `limits`."""

    def __init__(self, model_id: str, secret: str | None, max_bytes: int, max_age_s: float,
                 base: PlannerConfig, limits: PlannerLimits) -> None:
        self.model_id = model_id
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        self.base, self.limits = base, limits
        self._key = hashlib.sha256(b"wm-mpc-state\0" + model_id.encode() + b"\0" + (secret or "").encode()).digest()

    def issue(self, state: MPCState) -> str:
        plan = np.ascontiguousarray(state.plan, dtype=np.float32)
        data = {"v": VERSION, "model": self.model_id, "cfg": state.config.to_dict(), "goal": state.goal_id,
                "shape": list(plan.shape), "plan": plan.tobytes(), "t": round(state.created, 3)}
        if state.elites is not None:
            elites = np.ascontiguousarray(state.elites, dtype=np.float32)
            data |= {"elites_shape": list(elites.shape), "elites": elites.tobytes()}
        payload = msgpack.packb(data, use_bin_type=True)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).decode("ascii").rstrip("=")

    def read(self, token: str) -> MPCState:
        """Decode and check a token; every failure is a coded 4xx naming what to do."""
        if len(token) > self.max_bytes:
            raise _invalid("mpc_state.too_large", f"mpc_state is {len(token)} characters, over this server's "
                           f"limit of {self.max_bytes}; send the token exactly as the server returned it")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid("mpc_state.invalid", "mpc_state is not a token this server issued (not base64url)") from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        try:
            data = msgpack.unpackb(payload, raw=False, strict_map_key=True) if len(raw) > _MAC_BYTES else None
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise _invalid("mpc_state.invalid", "mpc_state is truncated or corrupt; send the token exactly as the "
                           "server returned it, or POST /plan to start over")
        if data.get("v") != VERSION:
            raise _invalid("mpc_state.version", f"mpc_state has format version {data.get('v')!r}; this server reads "
                           f"version {VERSION}: POST /plan to start over")
        if data.get("model") != self.model_id:
            raise ApiError(409, "mpc_state.model_mismatch",
                           "mpc_state was made by another model (or another version of it) than this server "
                           "serves; POST /plan to start a new episode on this model", "mpc_state")
        if not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]):
            raise _invalid("mpc_state.invalid", "mpc_state's signature does not match: it was changed after the "
                           "server issued it, or issued under another token secret")
        try:
            shape = tuple(int(d) for d in data["shape"])
            plan = np.frombuffer(data["plan"], dtype="<f4").reshape(shape).astype(np.float32)
            elites = None
            if "elites" in data:
                elites_shape = tuple(int(d) for d in data["elites_shape"])
                elites = np.frombuffer(data["elites"], dtype="<f4").reshape(elites_shape).astype(np.float32)
            config, goal_id, created = dict(data["cfg"]), str(data["goal"]), float(data["t"])
        except (KeyError, TypeError, ValueError):
            raise _invalid("mpc_state.invalid", "mpc_state is missing fields or has malformed ones") from None
        if plan.ndim != 2 or not np.isfinite(plan).all():
            raise _invalid("mpc_state.invalid", "mpc_state's plan is not a finite (horizon, action_dim) array")
        if elites is not None and (elites.ndim != 3 or elites.shape[1:] != plan.shape or not np.isfinite(elites).all()):
            raise _invalid("mpc_state.invalid", "mpc_state's elites are not finite (e, horizon, action_dim) arrays")
        if self.max_age_s and time.time() - created > self.max_age_s:
            raise _invalid("mpc_state.expired", f"mpc_state is older than {self.max_age_s:g} s; POST /plan to "
                           "start over")
        resolved, _ = resolve(self.base, config, self.limits)  # a token of a previous release: its names map
        if plan.shape[0] != resolved.horizon:
            raise _invalid("mpc_state.invalid", f"mpc_state's plan has {plan.shape[0]} steps, not the "
                           f"{resolved.horizon} of its planner settings")
        return MPCState(resolved, goal_id, plan, elites, created)


def goal_identity(model_id: str, pixels: np.ndarray, proprio: np.ndarray | None) -> str:
    """Content identity of a goal as this model would see it."""
    h = hashlib.sha256(model_id.encode())
    h.update(f"{pixels.shape}{pixels.dtype}".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    if proprio is not None:
        h.update(np.ascontiguousarray(proprio, dtype=np.float32).tobytes())
    return h.hexdigest()[:32]


class GoalCache:
    """Recent goal latents by goal identity, least recently used out first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, goal_id: str) -> Any | None:
        latent = self._items.get(goal_id)
        if latent is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(goal_id)
        return latent

    def put(self, goal_id: str, latent: Any) -> None:
        self._items[goal_id] = latent
        self._items.move_to_end(goal_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(422, code, message, "mpc_state")
