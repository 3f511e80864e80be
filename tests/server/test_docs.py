"""docs/server.md keeps up with the code: every setting and every error code is documented."""

from __future__ import annotations

import re
from pathlib import Path

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "server.md").read_text()
_CODE = re.compile(r'"((?:image|request|proprio|planner|session|auth|server|replan|http|plan|internal|client|pending_actions)'
                   r'\.[a-z_]+)"')
_ASGI_MESSAGES = {"http.disconnect", "http.request", "http.response"}  # ASGI event types, not error codes


def test_every_setting_is_documented():
    missing = [f"WM_{name.upper()}" for name in Settings.model_fields if f"WM_{name.upper()}" not in DOC]
    assert not missing


def test_every_error_code_is_documented():
    codes = set()
    for path in (ROOT / "server").rglob("*.py"):
        codes.update(_CODE.findall(path.read_text()))
    codes.update({"image.missing_shape", "image.missing_dtype"})  # built with an f-string
    codes.add("client.disconnected")
    assert len(codes) > 30
    missing = sorted(code for code in codes - _ASGI_MESSAGES if f"`{code}`" not in DOC)
    assert not missing
