"""A small client for the planning server (numpy, httpx, msgpack, pillow only).

    from wm_client import PlanningClient

    with PlanningClient("http://127.0.0.1:8000") as client:
        reply = client.plan(obs_frame, goal_frame, proprio=p, goal_proprio=gp, seed=0)
        for step in range(100):
            env.step(reply["actions"][0])          # ... execute one model step's env actions
            reply = client.replan(reply["session_id"], env.render(), proprio=env.proprio(),
                                  executed_steps=1)

Frames may be numpy arrays (HWC or CHW; uint8 in [0, 255] or float in
[0, 1]), PIL images, PNG/JPEG bytes, or a ready image dict. With msgpack
(the default) arrays travel raw with their shape and dtype; with JSON,
uint8 RGB(A) HWC arrays travel as base64 PNG and others as base64 raw bytes.
This module never imports the server or torch: ``pip install ./clients/python``
puts it into any Python, a simulator's included (clients/python/README.md).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import msgpack
import numpy as np
from PIL import Image

MSGPACK = "application/msgpack"
JSON = "application/json"
Frame = np.ndarray | Image.Image | bytes | Mapping[str, Any]


class PlanningError(Exception):
    """An error response: HTTP status, the server's code, its message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


class PlanningClient:
    """Blocking client; one connection pool, safe to share between threads.

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer KEY`` when the server needs one.
        use_msgpack: msgpack bodies (raw arrays, faster) instead of JSON.
        timeout: seconds per request.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        use_msgpack: bool = True,
        timeout: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.use_msgpack = use_msgpack
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> PlanningClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- operations -------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The health body; ``status`` is ``ok``, ``loading`` or ``failed`` (503)."""
        response = self._http.get("/health")
        if response.status_code not in (200, 503):
            raise _error(response)
        return dict(response.json())

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll /health until the model is loaded; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health()
                if last.get("status") == "ok":
                    return last
                if last.get("status") == "failed":
                    raise PlanningError(503, "server.failed", str(last.get("error")))
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(interval)
        raise TimeoutError(f"server not ready after {timeout} s: {last}")

    def stats(self) -> dict[str, Any]:
        return dict(self._request("GET", "/stats"))

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        if response.status_code != 200:
            raise _error(response)
        return response.text

    def plan(
        self,
        obs: Frame,
        goal: Frame,
        proprio: Sequence[float] | np.ndarray | None = None,
        goal_proprio: Sequence[float] | np.ndarray | None = None,
        *,
        session_id: str | None = None,
        seed: int | None = None,
        deadline_ms: float | None = None,
        planner: Mapping[str, Any] | None = None,
        color_order: str = "rgb",
        pending_actions: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Plan cold towards ``goal``; the reply's ``session_id`` is for ``replan``.

        ``pending_actions`` ((k * frameskip, raw_action_dim) env actions the robot
        executes after ``obs`` is taken and before this plan can take effect): the
        server plans from the state the model predicts after them, and the reply's
        actions start where they end (docs/realtime.md).

        ``planner`` overrides the server's planner settings within its limits:
        the driver's at the top level (method, horizon, max_iterations,
        objective, alpha, min_iterations, patience, min_improvement) and each
        solver's in its own mapping, e.g. ``{"method": "icem", "icem":
        {"samples": 150}}`` (the server's /openapi.json lists them all).
        """
        body: dict[str, Any] = {
            "obs": self.encode_image(obs, color_order),
            "goal": self.encode_image(goal, color_order),
        }
        _put(body, "proprio", _floats(proprio))
        _put(body, "goal_proprio", _floats(goal_proprio))
        _put(body, "session_id", session_id)
        _put(body, "seed", seed)
        _put(body, "deadline_ms", deadline_ms)
        _put(body, "planner", dict(planner) if planner is not None else None)
        _put(body, "pending_actions", _rows(pending_actions))
        return dict(self._request("POST", "/plan", body))

    def replan(
        self,
        session_id: str | None,
        obs: Frame,
        proprio: Sequence[float] | np.ndarray | None = None,
        executed_steps: int = 1,
        *,
        seed: int | None = None,
        deadline_ms: float | None = None,
        color_order: str = "rgb",
        mpc_state: str | None = None,
        goal: Frame | None = None,
        goal_proprio: Sequence[float] | np.ndarray | None = None,
        always_send_goal: bool = False,
        pending_actions: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Plan from a new frame after executing ``executed_steps`` model steps.

        ``pending_actions``: as for ``plan``; the warm start shifts by
        ``executed_steps`` plus the pending model steps.

        Either ``session_id`` (the server's session), or ``mpc_state`` (the last
        reply's token: stateless, any replica can serve it). With a token, pass
        the episode's ``goal`` (and ``goal_proprio``) too: it is sent only when
        the server asks for it (409 ``mpc_state.goal_unknown``, a replica that
        has not seen the goal), or with every request if ``always_send_goal``.
        """
        body: dict[str, Any] = {"obs": self.encode_image(obs, color_order), "executed_steps": executed_steps}
        _put(body, "session_id", session_id)
        _put(body, "mpc_state", mpc_state)
        _put(body, "proprio", _floats(proprio))
        _put(body, "seed", seed)
        _put(body, "deadline_ms", deadline_ms)
        _put(body, "pending_actions", _rows(pending_actions))
        with_goal = dict(body)
        if mpc_state is not None and goal is not None:
            with_goal["goal"] = self.encode_image(goal, color_order)
            _put(with_goal, "goal_proprio", _floats(goal_proprio))
            if always_send_goal:
                body = with_goal
        try:
            return dict(self._request("POST", "/replan", body))
        except PlanningError as exc:
            if exc.code != "mpc_state.goal_unknown" or body is with_goal or "goal" not in with_goal:
                raise
            return dict(self._request("POST", "/replan", with_goal))

    def delete_session(self, session_id: str) -> None:
        self._request("DELETE", f"/sessions/{session_id}")

    # -- wire -------------------------------------------------------------------

    def encode_image(self, frame: Frame, color_order: str = "rgb") -> dict[str, Any]:
        """The wire form of one frame (see the module docstring)."""
        if isinstance(frame, Mapping):
            return dict(frame)
        if isinstance(frame, Image.Image):
            buf = io.BytesIO()
            frame.save(buf, format="PNG")
            return self._file("png", buf.getvalue(), color_order)
        if isinstance(frame, (bytes, bytearray)):
            fmt = "jpeg" if bytes(frame[:3]) == b"\xff\xd8\xff" else "png"
            return self._file(fmt, bytes(frame), color_order)
        arr = np.asarray(frame)
        if (
            not self.use_msgpack
            and arr.dtype == np.uint8
            and arr.ndim == 3
            and arr.shape[-1] in (3, 4)
        ):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
            return self._file("png", buf.getvalue(), color_order)
        # Raw: C order, little-endian, with the shape and dtype that describe it.
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        return {
            "format": "raw",
            "data": self._bytes(arr.tobytes()),
            "shape": list(arr.shape),
            "dtype": arr.dtype.name,
            "color_order": color_order,
        }

    def _file(self, fmt: str, data: bytes, color_order: str) -> dict[str, Any]:
        return {"format": fmt, "data": self._bytes(data), "color_order": color_order}

    def _bytes(self, data: bytes) -> bytes | str:
        return data if self.use_msgpack else base64.b64encode(data).decode("ascii")

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        kind = MSGPACK if self.use_msgpack else JSON
        headers = {"Accept": kind}
        content = None
        if body is not None:
            headers["Content-Type"] = kind
            content = msgpack.packb(body, use_bin_type=True) if self.use_msgpack else json.dumps(body)
        response = self._http.request(method, path, content=content, headers=headers)
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return {}
        return _decode(response)


def _decode(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith(MSGPACK):
        return msgpack.unpackb(response.content, raw=False)
    return response.json()


def _error(response: httpx.Response) -> PlanningError:
    retry_after = _retry_after(response.headers.get("retry-after"))
    try:
        detail = _decode(response)["error"]
        return PlanningError(response.status_code, detail["code"], detail["message"], detail.get("field"),
                             retry_after)
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        text = response.text[:200]
        return PlanningError(response.status_code, f"http.{response.status_code}", text, None, retry_after)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: not sent by this server
        return None


def _floats(values: Sequence[float] | np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in np.asarray(values).reshape(-1)]


def _rows(values: Sequence[Sequence[float]] | np.ndarray | None) -> list[list[float]] | None:
    return None if values is None else np.asarray(values, dtype=np.float64).tolist()


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value
