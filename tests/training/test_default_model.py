"""The shipped default model: it loads as the server would load it, and reaches goals."""

import pytest

from envs.episodes import wall_episodes
from models import DEFAULT_MODEL_PATH, load_model
from planning import PlannerConfig
from server.local import LocalClient


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
    # The example client's loop (envs.episodes over wm_client.ControlLoop), planning in-process with what
    # `python -m server` plans with for this model on a CPU: the CPU preset and the artifact's objective.
    client = LocalClient(model)
    assert client.config == PlannerConfig.for_model(model, "cpu") and client.config.objective == "all"
    results = list(wall_episodes(client, 3, seed=123, goals="near"))  # budget 10 model steps
    assert sum(r.success for r in results) >= 2, [(r.success, r.final_state.tolist()) for r in results]
