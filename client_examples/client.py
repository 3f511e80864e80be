"""The planning client, re-exported from its package, ``wm_client`` (clients/python).

The client lives in its own small package (numpy, httpx, msgpack, pillow; no
torch, no server code) so that it installs into a simulator's Python; this
module keeps ``from client_examples.client import PlanningClient`` working.
New code imports ``wm_client``.
"""

from __future__ import annotations

try:
    from wm_client.client import JSON, MSGPACK, Frame, PlanningClient, PlanningError
except ModuleNotFoundError as exc:  # the project was installed without scripts/setup.sh
    if exc.name != "wm_client":
        raise
    raise ModuleNotFoundError(
        "client_examples needs the client package wm_client: pip install -e ./clients/python "
        "(scripts/setup.sh and `make setup` install it)", name=exc.name) from exc

__all__ = ["JSON", "MSGPACK", "Frame", "PlanningClient", "PlanningError"]
