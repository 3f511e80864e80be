"""Evaluation episodes on the built-in environments, driven by the one MPC loop, ``wm_client.ControlLoop``.

    from envs.episodes import run_episode, wall_episodes, wall_summary
    from wm_client import PlanningClient            # or server.local.LocalClient (no server)

    with PlanningClient("http://127.0.0.1:8000") as client:
        results = list(wall_episodes(client, episodes=10, seed=0, goals="near"))
    print(wall_summary(results, goals="near", seed=0))

An episode: render the goal state, then ``ControlLoop`` plans from the start
frame, executes ``execute`` model steps (each = frameskip env actions),
replans warm with the steps executed, and stops when ``success(state, goal)``
holds (checked after every model step) or the budget of model steps is spent.

``client`` is anything with ``wm_client.PlanningClient``'s calls: the HTTP
client (the example clients, a real server) or ``server.local.LocalClient``
(benchmarks, the trainer's planning check), so every evaluation runs the same
loop. This module needs numpy and ``wm_client`` (clients/python), never torch:
the example clients import it in a simulator's Python. It lives with the
environments because it is their glue to the loop (adapters, success tests,
tasks from ``envs.tasks``); ``wm_client`` knows nothing of any environment.

Seeds (kept from the evaluations this replaces, so published numbers
reproduce): the wall evaluation chains one counter through its episodes
(each request uses the next integer after ``seed``); PushT gives episode i
the seeds from ``seed * 100_000 + i * 1000``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from envs.dataset import Episode
from envs.tasks import PUSHT_BUDGET, WALL_BUDGETS, Task, pusht_tasks, wall_tasks
from envs.wall import WallEnv
from envs.wall import is_success as wall_success
from wm_client.control_loop import ControlLoop, LoopConfig, LoopReport

if TYPE_CHECKING:
    from wm_client import PlanningClient

PUSHT_SEED_STRIDE = (100_000, 1000)  # episode i of a PushT run starts at seed * 100_000 + i * 1000


class Simulator(Protocol):
    """What the loop needs of an environment (``WallEnv`` and ``PushTEnv`` have it)."""

    def get_state(self) -> np.ndarray: ...

    def set_state(self, state: np.ndarray) -> None: ...

    def render(self) -> np.ndarray: ...

    def proprio(self) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> Any: ...


class SimAdapter:
    """The loop's camera (``read``) and robot (``proprio``, ``apply``) over one simulator.

    An env action steps the simulator itself, so the loop's ``step`` callback is a no-op.
    """

    def __init__(self, env: Simulator) -> None:
        self.env = env

    def read(self) -> np.ndarray:
        return self.env.render()

    def proprio(self) -> np.ndarray:
        return self.env.proprio()

    def apply(self, action: np.ndarray) -> None:
        self.env.step(action)

    def hold(self) -> None:
        """A control tick without an action (the real-time loop waiting for a plan): the env still
        advances, the agent standing still. Both envs' actions are (2,) displacements, so zeros."""
        self.env.step(np.zeros(2))


class Recorder:
    """A simulator that keeps what it executes: the frame, proprio and state at each env step and the
    action applied there, as one trajectory in the dataset format (``envs.dataset.Episode``).

    Self-improvement (``training/self_improve.py``) records the episodes its model plans, successful or
    not, as training data: the states the model's own plans lead to, which random data rarely reaches.
    """

    def __init__(self, env: Simulator) -> None:
        self.env = env
        self.frames: list[np.ndarray] = []
        self.proprios: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []

    def get_state(self) -> np.ndarray:
        return self.env.get_state()

    def set_state(self, state: np.ndarray) -> None:
        raise RuntimeError("a Recorder records one continuous trajectory; set the state before wrapping")

    def render(self) -> np.ndarray:
        return self.env.render()

    def proprio(self) -> np.ndarray:
        return self.env.proprio()

    def step(self, action: np.ndarray) -> Any:
        self._observe()
        self.actions.append(np.asarray(action, dtype=np.float32).copy())
        return self.env.step(action)

    def _observe(self) -> None:
        self.frames.append(np.asarray(self.env.render(), dtype=np.uint8).copy())
        self.proprios.append(np.asarray(self.env.proprio(), dtype=np.float32).copy())
        self.states.append(np.asarray(self.env.get_state(), dtype=np.float64).copy())

    def episode(self) -> Episode:
        """The trajectory so far plus the current frame, whose action row is zero (no frame follows it)."""
        self._observe()
        frames, proprio, states = np.stack(self.frames), np.stack(self.proprios), np.stack(self.states)
        del self.frames[-1], self.proprios[-1], self.states[-1]  # the recorder can go on after this call
        width = np.asarray(self.actions[0]).shape[0] if self.actions else 2
        actions = np.concatenate([np.stack(self.actions).reshape(-1, width) if self.actions
                                  else np.zeros((0, width), np.float32), np.zeros((1, width), np.float32)])
        return Episode(frames=frames, actions=actions, proprio=proprio, states=states)


@dataclass
class EpisodeResult:
    task: Task
    success: bool
    steps: int  # model steps executed
    final_state: np.ndarray
    plan_ms: list[float]  # per request, as the client saw it
    requests: int  # plans + replans (each used one seed)
    errors: dict[str, int] = field(default_factory=dict)  # server error code -> count
    report: LoopReport | None = None  # the loop's own record (wall time, late plans, holds in real time)
    trajectory: Episode | None = None  # what was executed, in the dataset format (run with record=True)


def run_episode(client: PlanningClient, env: Simulator, task: Task, config: LoopConfig,
                success: Callable[[np.ndarray, np.ndarray], bool], record: bool = False) -> EpisodeResult:
    """One episode of ``config.model_steps`` model steps at most, from ``task.start`` towards ``task.goal``;
    record: keep the executed trajectory (``EpisodeResult.trajectory``)."""
    env.set_state(task.goal)
    goal_frame, goal_proprio = env.render(), env.proprio()
    env.set_state(task.start)
    recorder = Recorder(env) if record else None
    adapter = SimAdapter(recorder or env)
    loop = ControlLoop(client, adapter, adapter, step=lambda: None, goal_frame=goal_frame,
                       goal_proprio=goal_proprio, config=config,
                       until=lambda: success(env.get_state(), task.goal))
    try:
        report = loop.run()
    finally:
        loop.close()
    return EpisodeResult(task, report.done, report.model_steps, env.get_state(), report.plan_ms,
                         report.plans + report.replans, dict(report.errors), report,
                         recorder.episode() if recorder else None)


def _latency(results: list[EpisodeResult]) -> dict[str, Any]:
    lat = [ms for r in results for ms in r.plan_ms]
    return {"plan_ms_p50": statistics.median(lat), "plan_ms_p95": float(np.percentile(lat, 95)), "plans": len(lat)}


# Wall ------------------------------------------------------------------------------------
def wall_episodes(client: PlanningClient, episodes: int, seed: int, goals: str, execute: int = 1,
                  planner: Mapping[str, Any] | None = None, budget: int | None = None,
                  loop: Mapping[str, Any] | None = None, record: bool = False) -> Iterator[EpisodeResult]:
    """``episodes`` wall tasks (``envs.tasks.wall_tasks``), one result as each finishes.

    budget: model steps per episode (default ``WALL_BUDGETS[goals]``); planner: overrides sent with /plan;
    loop: more ``LoopConfig`` fields (e.g. ``{"mode": "async", "control_hz": 10}``: real time);
    record: keep each executed trajectory (``EpisodeResult.trajectory``).
    """
    frameskip = int(client.wait_ready(timeout=120)["model"]["frameskip"])
    env = WallEnv()
    budget = WALL_BUDGETS[goals] if budget is None else budget
    next_seed = seed
    for task in wall_tasks(goals, episodes, seed, env, frameskip):
        config = LoopConfig(model_steps=budget, execute=execute, seed=next_seed, planner=planner, **(loop or {}))
        result = run_episode(client, env, task, config, wall_success, record)
        next_seed += result.requests
        yield result


def wall_distance(result: EpisodeResult) -> float:
    return float(np.linalg.norm(result.final_state - result.task.goal))


def wall_line(i: int, r: EpisodeResult) -> str:
    """One human-readable line per episode (the example client prints it)."""
    return (f"episode {i:3d}: {'success' if r.success else 'failure'} steps={r.steps:2d} "
            f"final_dist={wall_distance(r):5.1f}px start={np.round(r.task.start, 1).tolist()} "
            f"goal={np.round(r.task.goal, 1).tolist()} plan_ms_p50={statistics.median(r.plan_ms):.0f}")


def wall_summary(results: list[EpisodeResult], goals: str, seed: int) -> dict[str, Any]:
    """The wall evaluation's final JSON (keys other tools parse: add, never rename)."""
    return {"goals": goals, "episodes": len(results), "seed": seed,
            "success_rate": sum(r.success for r in results) / len(results),
            "mean_steps": statistics.fmean(r.steps for r in results),
            "mean_final_distance": statistics.fmean(wall_distance(r) for r in results),
            **_latency(results)}


# PushT (optional extra: gym-pusht) ---------------------------------------------------------
def pusht_episodes(client: PlanningClient, episodes: int, seed: int, budget: int = PUSHT_BUDGET,
                   execute: int = 1, dataset: str | None = None, planner: Mapping[str, Any] | None = None,
                   max_step: float | None = None, loop: Mapping[str, Any] | None = None,
                   record: bool = False) -> Iterator[EpisodeResult]:
    """``episodes`` PushT tasks (``envs.tasks.pusht_tasks``, DINO-WM's protocol), one result as each finishes.

    The env renders at the model's image size; max_step: the data's action bound (table px);
    loop: more ``LoopConfig`` fields (real time: ``{"mode": "async", "control_hz": 10}``);
    record: keep each executed trajectory (``EpisodeResult.trajectory``).
    """
    from envs.pusht import DEFAULT_MAX_STEP, PushTEnv
    from envs.pusht import is_success as pusht_success

    model = client.wait_ready(timeout=120)["model"]
    env = PushTEnv(image_size=int(model["image_size"]), max_step=DEFAULT_MAX_STEP if max_step is None else max_step)
    base, stride = PUSHT_SEED_STRIDE
    for i, task in enumerate(pusht_tasks(env, episodes, seed, int(model["frameskip"]), dataset)):
        config = LoopConfig(model_steps=budget, execute=execute, seed=seed * base + i * stride, planner=planner,
                            **(loop or {}))
        yield run_episode(client, env, task, config, pusht_success, record)


def pusht_line(i: int, r: EpisodeResult) -> str:
    from envs.pusht import state_errors

    pos, ang = state_errors(r.final_state, r.task.goal)
    return (f"episode {i:3d}: {'success' if r.success else 'failure'} steps={r.steps:2d} "
            f"pos_err={pos:6.1f} angle_err={ang:4.2f} plan_ms_p50={statistics.median(r.plan_ms):.0f}"
            + (f" errors={r.errors}" if r.errors else ""))


def pusht_summary(results: list[EpisodeResult], model_name: str | None, seed: int, budget: int) -> dict[str, Any]:
    """The PushT evaluation's final JSON (keys other tools parse: add, never rename)."""
    from envs.pusht import state_errors

    errors = [state_errors(r.final_state, r.task.goal) for r in results]
    return {"env": "pusht", "model": model_name, "episodes": len(results), "seed": seed, "budget": budget,
            "success_rate": sum(r.success for r in results) / len(results),
            "mean_position_error": statistics.fmean(p for p, _ in errors),
            "mean_angle_error": statistics.fmean(a for _, a in errors),
            "mean_steps": statistics.fmean(r.steps for r in results),
            **_latency(results)}
