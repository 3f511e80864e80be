"""The server fixtures of tests/server, reused: a tiny model saved once per session."""

from tests.server.conftest import model_path  # noqa: F401 - fixture, registered by import
