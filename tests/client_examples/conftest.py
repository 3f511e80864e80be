"""The server fixtures of tests/server, reused: a real server on 127.0.0.1 with a tiny model."""

from tests.server.conftest import model_path, server_url  # noqa: F401 - fixtures, registered by import
