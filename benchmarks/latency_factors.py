"""Why the plan-latency benchmark and the closed-loop clients disagreed (issue 11, item 5).

    python -m benchmarks.latency_factors [--model PATH] [--episodes 10] [--seed 3] [--threads 1]

Records the requests of the wall closed loop (`envs.episodes` with
`planning.local.LocalClient`: the example client's loop in-process, the
server's settings for the model, "near" episodes), then replays every
one of them, interleaved in one process and at one thread count, in six
ways that each change one factor:

  A  what closed_loop times: encode (observation; goal too on a cold plan)
     + plan + conversion to env units; server settings; warm start as recorded
  B  plan only (A without encode and conversion)
  C  B, cold (no warm start)
  D  C with the bare CPU preset (objective "last", alpha 0.1): the settings
     the old benchmark used
  E  the old benchmark exactly: its own problems (benchmarks.common.wall_problem,
     seeds 0-4, in turn), bare CPU preset, cold
  F  E with the server's settings

Per variant: median latency, mean CEM iterations and median time per
iteration. Equal time per iteration and equal iterations mean the factor
does not matter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import find_default_model, load_or_none, machine, set_threads, wall_problem
from envs.episodes import wall_episodes
from models import Latent, WorldModel
from planning import CEMConfig, plan
from planning.local import LocalClient


class _Recorder(LocalClient):
    """LocalClient keeping what each request planned from: frames, proprio, goal latent, warm start, seed."""

    def __init__(self, model: WorldModel, cfg: CEMConfig) -> None:
        super().__init__(model, cfg)
        self.calls: list[dict[str, Any]] = []

    def plan(self, obs: Any, goal: Any, proprio: Any = None, goal_proprio: Any = None, **kw: Any) -> dict[str, Any]:
        reply = super().plan(obs, goal, proprio, goal_proprio, **kw)
        self.calls.append({"obs": obs, "proprio": proprio, "goal": goal, "goal_proprio": goal_proprio, "init": None,
                           "goal_z": self.sessions[reply["session_id"]].goal, "seed": reply["seed"]})
        return reply

    def replan(self, session_id: str | None, obs: Any, proprio: Any = None, executed_steps: int = 1,
               **kw: Any) -> dict[str, Any]:
        session = self.sessions.get(session_id or "")
        init = None if session is None else session.init_mean(executed_steps)  # before the replan records its plan
        reply = super().replan(session_id, obs, proprio, executed_steps, **kw)
        assert session is not None  # else super() raised session.not_found
        self.calls.append({"obs": obs, "proprio": proprio, "init": init, "goal_z": session.goal, "seed": reply["seed"]})
        return reply


def record_requests(model: WorldModel, cfg: CEMConfig, episodes: int, seed: int) -> list[dict[str, Any]]:
    """The closed loop's requests: frames, proprio, goal latent, warm start and seed of each."""
    recorder = _Recorder(model, cfg)
    for _ in wall_episodes(recorder, episodes, seed, "near"):
        pass
    return recorder.calls


def replay(model: WorldModel, calls: list[dict[str, Any]], server: CEMConfig, preset: CEMConfig) -> dict[str, Any]:
    bench = [wall_problem(model, 1, s) for s in range(5)]
    times: dict[str, list[tuple[float, int]]] = {}

    def encode(frame: np.ndarray, proprio: np.ndarray) -> Latent:
        return model.encode_observation(torch.from_numpy(frame[None]),
                                        torch.from_numpy(np.asarray(proprio, dtype=np.float32)[None]))

    def timed(key: str, z: Latent, goal: Latent, cfg: CEMConfig, init: torch.Tensor | None, seed: int) -> None:
        t0 = time.perf_counter()
        (res,) = plan(model, z, goal, cfg, init_mean=init, seeds=[seed])
        times.setdefault(key, []).append((time.perf_counter() - t0, res.iterations))

    with torch.inference_mode():
        for i, c in enumerate(calls):
            t0 = time.perf_counter()
            z = encode(c["obs"], c["proprio"])
            if c["init"] is None:
                encode(c["goal"], c["goal_proprio"])
            (res,) = plan(model, z, c["goal_z"], server, init_mean=c["init"], seeds=[c["seed"]])
            model.codec.to_env(res.actions).numpy()
            times.setdefault("A client: encode + plan + to_env, server settings, warm", []).append(
                (time.perf_counter() - t0, res.iterations))
            timed("B plan only, server settings, warm", z, c["goal_z"], server, c["init"], c["seed"])
            timed("C plan only, server settings, cold", z, c["goal_z"], server, None, c["seed"])
            timed("D plan only, bare CPU preset, cold", z, c["goal_z"], preset, None, c["seed"])
            p = bench[i % len(bench)]
            timed("E old benchmark: its problems, bare CPU preset", p.z_obs, p.z_goal, preset, None, i % len(bench))
            timed("F old benchmark's problems, server settings", p.z_obs, p.z_goal, server, None, i % len(bench))
    return {k: {"p50_ms": round(1000 * statistics.median(t for t, _ in v), 1),
                "iterations_mean": round(statistics.fmean(n for _, n in v), 2),
                "ms_per_iteration_p50": round(1000 * statistics.median(t / n for t, n in v), 1), "n": len(v)}
            for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.latency_factors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="trained wall model (default: models/default/wall.pt, runs/wall/model.pt)")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    model = load_or_none(find_default_model(args.model))
    if model is None:
        raise SystemExit("needs a trained wall model: --model PATH")
    server, preset = CEMConfig.for_model(model, "cpu"), CEMConfig.cpu_preset()
    calls = record_requests(model, server, args.episodes, args.seed)
    load_before = machine()["load_average_1m"]
    variants = replay(model, calls, server, preset)
    print(json.dumps({"machine": machine(), "load_average_1m_before": load_before, "requests": len(calls),
                      "cold_plans": sum(c["init"] is None for c in calls), "server_settings": server.to_dict(),
                      "variants": variants}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
