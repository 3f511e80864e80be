"""A new solver is one file plus its registration: its settings, limits, wire schema and cost follow."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from models.testing import tiny_model
from planning import PlannerConfig, plan
from planning.registry import SOLVERS
from planning.settings import Settings, setting
from planning.solver import Solver, draw_normal
from server import schemas
from server.engine import Engine
from server.settings import Settings as ServerSettings


@dataclass(frozen=True)
class RandomShootingSettings(Settings):
    section = "random_shooting"
    samples: int = setting(64, "sequences drawn per iteration", ge=1, limit="max_num_samples")
    sigma: float = setting(1.0, "their standard deviation", gt=0, limit="max_var_scale")


class RandomShooting(Solver):
    """Draws `samples` sequences around zero every iteration and keeps the best ever scored."""

    name = "random_shooting"
    settings_type = RandomShootingSettings
    cost_settings = ("samples",)

    def __init__(self, config, mean, seeds, bounds, init_elites=None):
        super().__init__(config, mean, seeds, bounds)
        s = config.solver(self.name)
        b, h, a = mean.shape
        self.noise = s.sigma * draw_normal(seeds, (config.max_iterations, s.samples, h, a), mean.device)
        self.best, self.best_cost = mean.clone(), torch.full((b,), float("inf"))

    @classmethod
    def rollouts(cls, config, iterations):
        return float(config.solver(cls.name).samples * iterations)

    def propose(self, idx, it):
        return self.noise[idx, it]

    def update(self, idx, it, candidates, costs):
        cost, arg = costs.min(dim=1)
        chosen = candidates[torch.arange(len(idx)), arg]
        better = cost < self.best_cost[idx]
        self.best[idx] = torch.where(better[:, None, None], chosen, self.best[idx])
        self.best_cost[idx] = torch.minimum(cost, self.best_cost[idx])

    def result(self, ids):
        return self.best[ids], torch.zeros_like(self.best[ids])


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(SOLVERS, RandomShooting.name, RandomShooting)


def test_a_registered_solver_gets_its_section_limits_schema_and_cost(registered):
    cfg = PlannerConfig(max_iterations=3, min_iterations=3).updated(
        {"method": "random_shooting", "random_shooting": {"samples": 8}})
    assert cfg.solver().samples == 8 and cfg.to_dict()["random_shooting"] == {"samples": 8, "sigma": 1.0}
    with pytest.raises(ValueError, match="random_shooting.samples=0"):
        cfg.updated({"random_shooting": {"samples": 0}})

    model = tiny_model()
    z = model.encode_observation(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, 2))
    g = model.encode_observation(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8), torch.ones(1, 2))
    (res,) = plan(model, z, g, cfg, seeds=[0])
    assert res.method == "random_shooting" and res.rollouts == 8 * 3 + 1 and torch.isfinite(res.actions).all()

    limits = ServerSettings(max_num_samples=50).limits()
    assert limits["random_shooting.samples"] == 50 and limits["random_shooting.sigma"] == 10.0
    wire = schemas._planner_overrides()
    section = wire.model_fields["random_shooting"].annotation.__args__[0]
    assert set(section.model_fields) == {"samples", "sigma"}
    assert "random_shooting" in wire.model_fields["method"].annotation.__args__[0].__args__
    engine = Engine(model, torch.device("cpu"), cfg)
    assert engine.plan_gflop(cfg) == pytest.approx(8 * 3 * engine.rollout_gflop(cfg.horizon))


def test_an_unregistered_solver_is_refused():
    with pytest.raises(ValueError, match="method='random_shooting'"):
        PlannerConfig(method="random_shooting")
