"""planner.subgoals through a real server: the shipped wall model with a small subgoal graph built
from freshly collected wall data (the same command users run, on 200 episodes instead of 2,000)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from envs import WallEnv
from envs.collect import CollectConfig, collect
from models import DEFAULT_MODEL_PATH
from models.artifact import model_identity
from planning.subgoals import SubgoalGraphError
from server.engine import load_subgoals
from tests.server.conftest import running_server, settings_for
from training.subgoals import main as subgoals_main
from wm_client import PlanningClient, PlanningError

PLANNER = {"cem": {"samples": 24, "elites": 4}, "max_iterations": 3, "min_iterations": 1, "patience": 1}
ON = {"subgoals": True}


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subgoals")
    collect(root / "wall", CollectConfig(episodes=200, steps=50, seed=0, persistent_prob=0.8), progress=False)
    out = root / "wall.subgoals.pt"
    assert subgoals_main(["build", "--model", str(DEFAULT_MODEL_PATH), "--dataset", str(root / "wall"),
                          "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def url(graph_path: Path) -> Iterator[str]:
    with running_server(settings_for(DEFAULT_MODEL_PATH, subgoals=str(graph_path), planner=PLANNER)) as u:
        PlanningClient(u).wait_ready(timeout=120)
        yield u


@pytest.fixture(scope="module")
def plain_url() -> Iterator[str]:
    with running_server(settings_for(DEFAULT_MODEL_PATH, subgoals="off", planner=PLANNER)) as u:
        PlanningClient(u).wait_ready(timeout=120)
        yield u


def _far_task() -> tuple[dict, dict]:
    """Start on the left of the wall, goal on the right, far from the door."""
    env = WallEnv()
    goal = env.reset(state=np.array([50.0, 8.0]))
    start = env.reset(state=np.array([10.0, 8.0]))
    return start, goal


def test_health_reports_the_graph_and_requests_opt_in(url: str):
    start, goal = _far_task()
    with PlanningClient(url) as c:
        model = c.health()["model"]
        assert model["subgoals"]["nodes"] == 200 * 11  # 51 frames per episode, one node every 5 env steps
        assert c.stats()["planner_defaults"]["subgoals"] is False  # opt-in: see docs/planning.md
        assert c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"])["subgoal"] is None


def test_a_far_plan_aims_at_a_subgoal_and_returns_a_valid_plan(url: str):
    start, goal = _far_task()
    with PlanningClient(url) as c:
        reply = c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], seed=0, planner=ON)
        actions = np.asarray(reply["actions"])
        assert actions.shape == (reply["horizon"] * reply["frameskip"], 2)
        assert np.isfinite(actions).all() and np.abs(actions).max() <= 2.0 + 1e-6  # the wall model's bounds
        assert reply["subgoal"]["used"] is True
        assert reply["subgoal"]["path_steps"] > PLANNER.get("subgoal_hops", 2)
        # The stateless path: the token carries the settings, the subgoal is recomputed from the new frame.
        again = c.replan(None, start["visual"], start["proprio"], executed_steps=1, mpc_state=reply["mpc_state"],
                         goal=goal["visual"], goal_proprio=goal["proprio"])
        assert again["subgoal"] is not None and np.isfinite(np.asarray(again["actions"])).all()
        off = c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], seed=0,
                     planner={"subgoals": False})
        assert off["subgoal"] is None
        stats = c.stats()["planner"]["subgoals"]
        assert stats["plans"] >= 2 and stats["aimed_at_subgoal"] >= 1


def test_a_near_goal_is_planned_for_directly(url: str):
    env = WallEnv()
    goal = env.reset(state=np.array([10.5, 8.0]))  # half a pixel: the same graph node as the start
    start = env.reset(state=np.array([10.0, 8.0]))
    with PlanningClient(url) as c:
        reply = c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], seed=0, planner=ON)
    assert reply["subgoal"]["used"] is False


def test_bad_subgoal_settings_are_refused(url: str):
    start, goal = _far_task()
    with PlanningClient(url) as c:
        for planner, field in (({"subgoals": "yes"}, "planner.subgoals"), ({"subgoal_hops": 0}, "planner.subgoal_hops"),
                               ({"subgoal_hops": 10_000}, "planner.subgoal_hops")):
            with pytest.raises(PlanningError) as err:
                c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], planner={**ON, **planner})
            assert err.value.status == 422 and err.value.field == field


def test_a_server_without_a_graph_refuses_subgoals_and_plans_without(plain_url: str):
    start, goal = _far_task()
    with PlanningClient(plain_url) as c:
        assert c.health()["model"]["subgoals"] is None
        with pytest.raises(PlanningError) as err:
            c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], planner={"subgoals": True})
        assert err.value.code == "planner.subgoals_unavailable" and err.value.field == "planner.subgoals"
        assert c.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"])["subgoal"] is None


def test_subgoals_on_by_default_without_a_graph_is_refused_at_load():
    from server.engine import Engine

    with pytest.raises(ValueError, match="no subgoal graph"):
        Engine.load(DEFAULT_MODEL_PATH, "cpu", planner={**PLANNER, **ON}, subgoals="off")


def test_a_graph_of_another_model_or_a_missing_file_is_refused_at_load(graph_path: Path, tmp_path: Path):
    model_id = model_identity(str(DEFAULT_MODEL_PATH))
    assert load_subgoals(str(graph_path), DEFAULT_MODEL_PATH, model_id) is not None
    with pytest.raises(SubgoalGraphError, match="another model"):
        load_subgoals(str(graph_path), DEFAULT_MODEL_PATH, "0" * 32)
    with pytest.raises(FileNotFoundError, match="training.subgoals build"):
        load_subgoals(str(tmp_path / "none.pt"), DEFAULT_MODEL_PATH, model_id)
    assert load_subgoals("auto", tmp_path / "model.pt", model_id) is None  # no graph beside it: off
    # A retrained model beside an old graph: "auto" serves without subgoals instead of failing to start.
    (tmp_path / "model.subgoals.pt").write_bytes(graph_path.read_bytes())
    assert load_subgoals("auto", tmp_path / "model.pt", "0" * 32) is None
    assert load_subgoals("off", DEFAULT_MODEL_PATH, model_id) is None


def test_local_client_plans_with_a_graph_as_the_server_does(graph_path: Path):
    from models import load_model
    from server.local import LocalClient

    model = load_model(DEFAULT_MODEL_PATH)
    graph = load_subgoals(str(graph_path), DEFAULT_MODEL_PATH, model_identity(str(DEFAULT_MODEL_PATH)))
    start, goal = _far_task()
    with LocalClient(model, subgoals=graph) as local, LocalClient(model) as plain:
        reply = local.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], seed=0,
                           planner={**PLANNER, **ON})
        assert reply["subgoal"]["used"] is True and reply["subgoal"]["path_steps"] > 2
        with pytest.raises(PlanningError) as err:  # without a graph: refused with the server's code
            plain.plan(start["visual"], goal["visual"], start["proprio"], goal["proprio"], planner={**PLANNER, **ON})
        assert err.value.code == "planner.subgoals_unavailable"


def test_the_shipped_graph_is_bound_to_the_shipped_model():
    # Re-saving models/default/wall.pt (even its metadata alone) changes its identity; `--subgoals auto` would
    # then quietly serve without the graph. Rebuild the graph with the artifact: scripts/train_default.sh.
    shipped = DEFAULT_MODEL_PATH.with_name("wall.subgoals.pt")
    assert load_subgoals("auto", DEFAULT_MODEL_PATH, model_identity(str(DEFAULT_MODEL_PATH))) is not None
    assert load_subgoals(str(shipped), DEFAULT_MODEL_PATH, model_identity(str(DEFAULT_MODEL_PATH))) is not None
