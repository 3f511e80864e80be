"""Scale-out on Ray Serve: N replicas of the same FastAPI app, each loading the model once.

    python -m server.ray --replicas 2 [--model PATH] [any `python -m server` flag]
    serve run server.ray:app            # with WM_* variables for the settings

Each replica builds the planning server's own app (same routes, validation,
auth, error codes, metrics and per-replica micro-batching) inside the replica
(``__serve_build_asgi_app__``), waits for its model before it reports ready,
and answers Ray's health checks from its readiness and its model thread, so
Ray restarts a replica that died or is wedged in one planner iteration.
Replicas, GPUs and autoscaling are settings, not code.

State: a replica keeps sessions and goal latents in its own memory. Clients
that may be served by any replica replan with the ``mpc_state`` token
(docs/server.md, "Stateless replans"); a replica that lacks the goal asks for
it with 409 ``mpc_state.goal_unknown``. Ray's proxy does the HTTP serving
here: the uvicorn settings of ``python -m server`` (header timeout,
connection limit) do not apply; see docs/deployment.md.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from server.settings import Settings, from_cli

log = logging.getLogger(__name__)


class RaySettings(Settings):
    """The server's settings plus the deployment's (flags and WM_* variables, as for ``python -m server``)."""

    replicas: int = Field(default=1, ge=1, description="replicas when not autoscaling")
    min_replicas: int | None = Field(default=None, ge=0, description="autoscaling lower bound (with max)")
    max_replicas: int | None = Field(default=None, ge=1, description="autoscaling upper bound (with min)")
    target_ongoing_requests: float = Field(
        default=4.0, gt=0, description="autoscaling: requests in flight per replica to aim for")
    num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs per replica; unset: 1 when the cluster has GPUs, else 0")
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs Ray reserves per replica")
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="requests Ray sends one replica at once (its queue does the rest)")
    health_check_period_s: float = Field(default=5.0, gt=0, description="how often Ray checks each replica")
    health_check_timeout_s: float = Field(default=10.0, gt=0, description="a check slower than this fails")
    wedged_after_s: float = Field(
        default=300.0, gt=0, description="a replica whose one planner iteration runs longer is unhealthy")
    ray_address: str | None = Field(
        default=None, description="an existing Ray cluster to join (e.g. auto); unset: start a local one")


def deployment_options(settings: RaySettings, gpus_available: bool) -> dict[str, Any]:
    """``serve.deployment`` options from settings: replicas or autoscaling, resources, health checks."""
    num_gpus = settings.num_gpus if settings.num_gpus is not None else (1.0 if gpus_available else 0.0)
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": settings.max_ongoing_requests,
        "health_check_period_s": settings.health_check_period_s,
        "health_check_timeout_s": settings.health_check_timeout_s,
    }
    if settings.min_replicas is not None or settings.max_replicas is not None:
        low = settings.min_replicas if settings.min_replicas is not None else 1
        high = settings.max_replicas if settings.max_replicas is not None else max(low, settings.replicas)
        if low > high:
            raise ValueError(f"min_replicas={low} exceeds max_replicas={high}")
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "target_ongoing_requests": settings.target_ongoing_requests}
    else:
        options["num_replicas"] = settings.replicas
    return options


def build(settings: RaySettings, gpus_available: bool = False) -> Any:
    """The Serve application (``serve.run`` it)."""
    from ray import serve

    from server.app import create_app

    server_settings = Settings(**{k: v for k, v in settings.model_dump().items() if k in Settings.model_fields})

    @serve.ingress()
    class Planner:
        """One replica: the planning server's app, its model loaded before it reports ready."""

        def __init__(self, values: dict[str, Any]) -> None:
            context = serve.get_replica_context()
            name = values.get("replica_name") or f"{context.deployment}#{context.replica_id.unique_id}"
            self.settings = Settings(**(values | {"replica_name": name}))
            self.wedged_after_s = settings.wedged_after_s

        def __serve_build_asgi_app__(self) -> Any:
            self._planning_app = create_app(self.settings, load_before_serving=True)
            return self._planning_app

        async def check_health(self) -> None:
            """Raise (Ray then restarts this replica) when the model failed or its thread is dead or stuck."""
            runtime = self._planning_app.state.runtime
            if runtime.status == "failed":
                raise RuntimeError(f"the model failed to load: {runtime.error}")
            if runtime.scheduler is not None:
                problem = runtime.scheduler.health(self.wedged_after_s)
                if problem is not None:
                    raise RuntimeError(problem)

    values = _secrets_revealed(server_settings)
    return serve.deployment(name="planner", **deployment_options(settings, gpus_available))(Planner).bind(values)


def _secrets_revealed(settings: Settings) -> dict[str, Any]:
    """Settings as plain values for the replicas (SecretStr revealed: they rebuild it)."""
    values = settings.model_dump()
    for key in ("api_key", "token_secret"):
        if values.get(key) is not None:
            values[key] = getattr(settings, key).get_secret_value()
    values["planner"] = settings.planner.model_dump(exclude_none=True)
    return values


def main(argv: Sequence[str] | None = None) -> int:
    settings = from_cli(RaySettings, argv)
    if settings is None:
        return 2
    import ray
    from ray import serve

    if settings.ray_address is None:  # a local cluster on this machine's loopback only
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=settings.ray_address, include_dashboard=False, logging_level=logging.WARNING)
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # leave serve.run's blocking loop, then shut the cluster down below

    signal.signal(signal.SIGTERM, stop)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build(settings, gpus), name="planner", route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        log.info("stopping: replicas finish their requests, then the local cluster shuts down")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _app_from_env() -> Any:
    """``serve run server.ray:app``: settings from WM_* variables only."""
    settings = RaySettings()
    import ray

    return build(settings, ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0)


def __getattr__(name: str) -> Any:  # `serve run server.ray:app` builds the app on first access
    if name == "app":
        return _app_from_env()
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
