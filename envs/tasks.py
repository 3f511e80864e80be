"""Evaluation tasks of the built-in environments: (start state, goal state) pairs, deterministic for a seed.

Evaluations (the example clients, the benchmarks, the trainer's planning check)
all draw their tasks here, so that one seed means the same tasks everywhere.

Wall (``envs.wall``):
  near  DINO-WM style: the goal is where 5 model steps of random actions (one
        uniform action per model step, held for frameskip env steps) take the
        agent from the start; budget 10 model steps.
  far   start and goal drawn uniformly over the free space of the whole room,
        so about half the episodes must cross the wall through the door;
        budget 40 model steps.

PushT (``envs.pusht``, optional extra): as in DINO-WM's PushT evaluation, a
start state and as goal the state reached after 5 model steps of the *data's*
actions from it: a dataset's episodes (its ``states.npy``), or, without one,
the collector's behaviour policy (``envs/collect_pusht.py``).

Tasks already solved at their start are redrawn: they measure nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from envs.wall import DEFAULT_FRAMESKIP, WallEnv, is_success

if TYPE_CHECKING:
    from envs.pusht import PushTEnv

WALL_BUDGETS = {"near": 10, "far": 40}  # model steps per episode
PUSHT_GOAL_MODEL_STEPS = 5  # DINO-WM: the goal is 5 model steps of data actions away
PUSHT_BUDGET = 10


class Task(NamedTuple):
    start: np.ndarray  # env state
    goal: np.ndarray  # env state


def wall_tasks(kind: str, n: int, seed: int, env: WallEnv | None = None,
               frameskip: int = DEFAULT_FRAMESKIP) -> list[Task]:
    """``n`` wall tasks of a kind (``near`` or ``far``)."""
    if kind not in WALL_BUDGETS:
        raise ValueError(f"goals={kind!r}: expected one of {sorted(WALL_BUDGETS)}")
    env = env or WallEnv()
    rng = np.random.default_rng(seed)
    tasks: list[Task] = []
    while len(tasks) < n:
        start = env.sample_free_state(rng)
        if kind == "far":
            goal = env.sample_free_state(rng)
        else:
            env.reset(state=start)
            for _ in range(5):
                a = rng.uniform(-env.layout.max_step, env.layout.max_step, size=2)
                for _ in range(frameskip):
                    env.step(a)
            goal = env.get_state()
        if not is_success(start, goal):
            tasks.append(Task(start, goal))
    return tasks


def pusht_tasks(env: PushTEnv, n: int, seed: int, frameskip: int, dataset: str | None = None) -> list[Task]:
    """``n`` PushT tasks (DINO-WM's goal protocol); from ``dataset``'s states and actions when given."""
    from envs.collect_pusht import PushTCollectConfig, rollout_episode
    from envs.pusht import is_success as pusht_success

    rng = np.random.default_rng(seed)
    steps = PUSHT_GOAL_MODEL_STEPS * frameskip
    ds = None
    if dataset is not None:
        from envs.dataset import load_dataset

        ds = load_dataset(dataset)
        if ds.states is None:
            raise ValueError(f"{dataset} has no states.npy; the goal protocol needs simulator states")
    tasks: list[Task] = []
    for _ in range(100 * n):
        if len(tasks) == n:
            break
        if ds is None:
            ep = rollout_episode(env, PushTCollectConfig(episodes=1, steps=steps, image_size=env.image_size,
                                                         max_step=env.max_step), rng)
            start, actions = ep.states[0], ep.actions[:steps]
        else:
            e = int(rng.integers(ds.num_episodes))
            ep = ds.episode(e)
            if ep.length <= steps:
                continue
            t = int(rng.integers(ep.length - steps))
            start, actions = np.array(ep.states[t]), np.array(ep.actions[t:t + steps])
        env.reset(start)  # replay the data's actions in the simulator, as DINO-WM does
        for a in actions:
            env.step(a)
        goal = env.get_state()
        if not pusht_success(start, goal):
            tasks.append(Task(start, goal))
    if len(tasks) < n:
        raise ValueError(f"only {len(tasks)} of {n} tasks are not solved at their start")
    return tasks
