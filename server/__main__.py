"""``python -m server [--model PATH] [--host 127.0.0.1] [--port 8000] [--device auto]``.

Checks that the model artifact exists before listening (a missing model is a
clear error and exit status 2, never random weights), then serves with
uvicorn. A model that fails to load after start-up stops the server with
exit status 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from server.settings import Settings, from_cli

log = logging.getLogger("server")


def main(argv: Sequence[str] | None = None) -> int:
    settings = from_cli(Settings, argv)
    if settings is None:
        return 2
    # Imported here so that --help and bad flags answer without importing torch.
    from models import DEFAULT_MODEL_PATH
    from server.app import create_app
    from server.engine import resolve_device
    from server.http import uvicorn_config

    try:
        device = resolve_device(settings.device)
    except (ValueError, RuntimeError) as exc:
        log.error("invalid --device %r: %s", settings.device, exc)
        return 2
    from models.inference import InferenceConfig, check_supported

    try:
        check_supported(InferenceConfig(dtype=settings.dtype), device)
    except ValueError as exc:
        log.error("invalid --dtype %r on %s: %s", settings.dtype, device, exc)
        return 2

    model_path = Path(settings.model) if settings.model is not None else Path(DEFAULT_MODEL_PATH)
    if not model_path.exists():
        origin = "--model / WM_MODEL" if settings.model is not None else "the default model path"
        log.error(
            "no model artifact at %s (from %s). Pass --model PATH to a trained model; the "
            "server does not serve random weights.",
            model_path,
            origin,
        )
        return 2

    fatal: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        fatal.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=stop)
    # Logging is configured above; keep uvicorn's access log in it. On SIGTERM uvicorn
    # stops listening, gives in-flight plans shutdown_grace_s, then cancels them.
    config = uvicorn_config(app, settings, log_level=settings.log_level, log_config=None)
    server = uvicorn.Server(config)
    server.run()
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
