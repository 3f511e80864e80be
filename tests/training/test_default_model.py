"""The shipped default model: it loads as the server would load it, and reaches goals."""

import pytest

from client_examples.closed_loop import InProcessPlanner, run_episode
from envs.tasks import wall_tasks as make_tasks
from envs import WallEnv
from models import DEFAULT_MODEL_PATH, load_model
from planning import CEMConfig


@pytest.fixture(scope="module")
def model():
    return load_model(None)  # None = the shipped default, exactly what `python -m server` does


def test_default_model_is_shipped_with_train_split_statistics(model):
    assert DEFAULT_MODEL_PATH.is_file()
    assert DEFAULT_MODEL_PATH.stat().st_size < 5 * 2**20  # small enough to commit
    prov = model.stats.provenance
    assert prov["split"] == "train" and prov["num_episodes"] > 0
    assert all(not m.training for m in model.modules())


def test_default_model_reaches_near_goals_in_closed_loop(model):
    env = WallEnv()
    planner = InProcessPlanner(model, CEMConfig.cpu_preset(), seed=0)
    tasks = make_tasks("near", 3, seed=123, env=env, frameskip=model.config.frameskip)
    results = [run_episode(env, planner, start, goal, budget=10) for start, goal in tasks]
    assert sum(r.success for r in results) >= 2, [(r.success, r.final_distance) for r in results]
