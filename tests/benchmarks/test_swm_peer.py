"""benchmarks.swm_peer: stable-worldmodel's solvers through the thin adapter, in the closed
loop of benchmarks.solvers. Skips without the package (pip install --no-deps stable-worldmodel loguru)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import solvers, swm_peer
from benchmarks.harness import find_model
from benchmarks.problems import reachable_problem
from models.flops import encoder_flops, rollout_flops
from models import load_model
from models.testing import tiny_model
from planning import PlannerConfig, objective


@pytest.fixture(scope="module")
def swm():
    try:
        mod = swm_peer.import_solvers()
    except ImportError as exc:  # e.g. its logger (loguru) missing
        pytest.skip(f"stable-worldmodel's solvers do not import: {exc}")
    if mod is None:
        pytest.skip("stable-worldmodel is not installed")
    return mod


def _cost():
    model = tiny_model(action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
    prob = reachable_problem(model, 1, 5, seed=3)
    cost = swm_peer.WallCost(model, PlannerConfig(objective="all", alpha=10.0))
    cost.set_problem(prob.z_obs, prob.z_goal)
    return model, prob, cost


def test_cost_is_the_planner_objective_of_the_clamped_actions(swm):
    model, prob, cost = _cost()
    cand = 3 * torch.randn(1, 6, 5, model.config.action_dim, generator=torch.Generator().manual_seed(0))
    got = cost.get_cost({"req": torch.zeros(1, 6, dtype=torch.long)}, cand)
    clamped = torch.maximum(torch.minimum(cand[0], cost.high), cost.low)
    z0 = prob.z_obs.index(torch.zeros(6, dtype=torch.long))
    zg = prob.z_goal.index(torch.zeros(6, dtype=torch.long))
    with torch.inference_mode():
        want = objective(model.rollout(z0, clamped), zg, "all", 10.0)
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-6)
    assert cost.rollouts == 6 and not torch.equal(clamped, cand[0])


def test_gradient_cost_reaches_the_actions_and_not_the_weights(swm):
    model, _, cost = _cost()
    acts = torch.zeros(1, 2, 5, model.config.action_dim, requires_grad=True)
    cost.get_cost({"req": torch.zeros(1, 2, dtype=torch.long)}, acts).sum().backward()
    assert acts.grad is not None and acts.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters()) and cost.grad_rollouts == 2


def test_quick_closed_loop_rows_join_the_solvers_table(swm, tmp_path, capsys):
    if find_model(None) is None:
        pytest.skip("no shipped wall model")
    cells = ["swm_icem_50x10", "swm_gd_4x15"]
    out = tmp_path / "swm.json"
    assert swm_peer.main(["--quick", "--cells", *cells, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["cell"] for r in rows] == cells
    assert [r["method"] for r in rows] == ["swm-icem", "swm-gradient"]
    for r in rows:
        assert 0.0 <= r["success_rate"] <= 1.0 and r["plans"] >= 1 and r["plan_ms_p50"] > 0
    # the gradient solver's plans are priced as 4 sequences x 2 steps of forward + backward, plus one encoding
    c = load_model(find_model(None)).config
    want = (4 * 2 * 3 * rollout_flops(c, 5, "recompute").total + encoder_flops(c)) / 1e9
    assert rows[1]["gflops_per_plan"] == pytest.approx(want)
    capsys.readouterr()
    assert solvers.main(["--report", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"`{c}`" in table for c in cells)
