"""A real server on a small seeded LeWM artifact: /health, plan, session and token replans,
every solver, and admission priced by LeWM's own FLOP model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.lewm.flops import rollout_gflop
from models.lewm.testing import TINY_LEWM, save_tiny_lewm
from planning.registry import SOLVERS
from tests.server.conftest import running_server, settings_for
from wm_client import PlanningClient

SIZE = TINY_LEWM.image_size
BOUND = 2.0


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def lewm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lewm(tmp_path_factory.mktemp("lewm") / "lewm.pt", seed=1,
                          action_low=(-BOUND, -BOUND), action_high=(BOUND, BOUND))


@pytest.fixture(scope="module")
def client(lewm_path: Path) -> Iterator[PlanningClient]:
    # the artifact's own planner recommendation (metadata "planner") is the default: no operator planner
    with running_server(settings_for(lewm_path, planner={})) as url, PlanningClient(url) as c:
        c.wait_ready(timeout=60)
        yield c


def test_health_reports_the_lewm_in_eval_mode(client):
    health = client.health()
    assert health["status"] == "ok" and health["eval_mode"] is True
    model = health["model"]
    assert model["family"] == "lewm" and model["name"] == "tiny-lewm" and model["proprio_dim"] == 0
    assert model["latent"] == [1, TINY_LEWM.embed_dim]


def test_plan_then_session_and_token_replans(client):
    first = client.plan(frame(1), frame(2), seed=0)
    h = first["horizon"]
    actions = np.asarray(first["actions"])
    assert actions.shape == (h * TINY_LEWM.frameskip, TINY_LEWM.raw_action_dim)
    assert np.all(np.abs(actions) <= BOUND + 1e-9) and np.isfinite(first["loss"])
    again = client.replan(first["session_id"], frame(3), executed_steps=1, seed=0)
    assert np.asarray(again["actions"]).shape == actions.shape
    assert again["warm_start"] is True and again["session_id"] == first["session_id"]
    # stateless: the token carries the warm start, so it replans exactly as the session does
    stateless = client.replan(None, frame(4), executed_steps=1, seed=0, mpc_state=again["mpc_state"], goal=frame(2))
    with_session = client.replan(again["session_id"], frame(4), executed_steps=1, seed=0)
    np.testing.assert_allclose(stateless["actions"], with_session["actions"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_every_solver_is_served(client, method):
    planner = {"method": method, "max_iterations": 6, "min_iterations": 1,
               "cem_gradient": {"gradient_iterations": 2}, "icem_gradient": {"gradient_iterations": 2}}
    reply = client.plan(frame(5), frame(6), seed=1, planner=planner)
    assert np.isfinite(reply["loss"]) and len(reply["actions"]) > 0


def test_stats_report_the_model(client):
    model = client.stats()["model"]
    assert model["family"] == "lewm" and model["stats_provenance"]["split"] == "train"


def test_admission_prices_a_plan_with_lewms_flop_model(lewm_path):
    from server.engine import Engine
    engine = Engine.load(lewm_path, device="cpu")
    cfg = engine.base_config
    assert engine.rollout_gflop(cfg.horizon) == pytest.approx(rollout_gflop(TINY_LEWM, cfg.horizon))
    assert engine.plan_gflop(cfg) == pytest.approx(
        SOLVERS[cfg.method].rollouts(cfg, cfg.max_iterations) * rollout_gflop(TINY_LEWM, cfg.horizon))
