"""LeWM behind the planner's interface: one latent per frame, a cached rollout equal to
le-wm's window-recomputing one, BatchNorm only in eval mode, artifacts that round-trip,
every solver, and a FLOP count that matches what runs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import load_model, save_model
from models.artifact import ArtifactError
from models.lewm import LeWM
from models.lewm.flops import rollout_flops
from models.lewm.testing import TINY_LEWM, tiny_lewm
from models.world_model import Latent
from planning import PlannerConfig, objective, plan
from planning.registry import SOLVERS

TOL = dict(rtol=1e-5, atol=1e-5)


def _reference_rollout(model: LeWM, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """le-wm's `JEPA.rollout` with one observed frame: the whole window of the last
    num_hist frames through `predict` at every step, keeping its last prediction."""
    emb = z0[:, None]  # (B, 1, E)
    for t in range(actions.shape[1]):
        lo = max(0, t + 1 - model.config.num_hist)
        emb = torch.cat([emb, model.predict(emb[:, lo:], actions[:, lo:t + 1])[:, -1:]], dim=1)
    return emb[:, 1:]


@pytest.fixture(scope="module")
def model() -> LeWM:
    return tiny_lewm(seed=3)


def _frames(n: int, seed: int = 0, size: int = 28) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_a_frame_is_one_latent_token(model):
    with torch.inference_mode():
        z = model.encode_observation(_frames(3), None)
    assert z.visual.shape == (3, 1, TINY_LEWM.embed_dim) and z.proprio.shape == (3, 0)


@pytest.mark.parametrize("horizon", [1, 3, 7])
def test_cached_rollout_equals_the_window_recomputing_reference(model, horizon):
    g = torch.Generator().manual_seed(horizon)
    z0 = torch.randn(4, TINY_LEWM.embed_dim, generator=g)
    actions = torch.randn(4, horizon, TINY_LEWM.action_dim, generator=g)
    with torch.inference_mode():
        got = model.rollout(Latent(z0[:, None], z0.new_zeros(4, 0)), actions)
        want = _reference_rollout(model, z0, actions)
    assert got.visual.shape == (4, horizon, 1, TINY_LEWM.embed_dim) and got.proprio.shape == (4, horizon, 0)
    torch.testing.assert_close(got.visual[:, :, 0], want, **TOL)


def test_differentiable_rollout_matches_and_reaches_the_actions(model):
    z0 = Latent(torch.randn(2, 1, TINY_LEWM.embed_dim), torch.zeros(2, 0))
    actions = torch.randn(2, 5, TINY_LEWM.action_dim, requires_grad=True)
    out = model.differentiable_rollout(z0, actions)
    out.visual.square().sum().backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0
    with torch.inference_mode():
        torch.testing.assert_close(out.visual.detach(), model.rollout(z0, actions.detach()).visual, **TOL)


def test_batchnorm_refuses_train_mode():
    m = tiny_lewm().train()
    with pytest.raises(RuntimeError, match="eval mode"):
        m.encode(torch.zeros(2, 3, 28, 28))


def test_artifact_round_trip_builds_an_eval_mode_lewm(model, tmp_path):
    path = save_model(model, tmp_path / "lewm.pt", metadata={"planner": {"method": "cem"}})
    loaded = load_model(path)
    assert isinstance(loaded, LeWM) and loaded.config == model.config
    assert not any(m.training for m in loaded.modules()) and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.planner_recommendation == {"method": "cem"}
    assert loaded.describe()["family"] == "lewm" and loaded.describe()["proprio_dim"] == 0
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode_observation(_frames(2), None).visual,
                                   model.encode_observation(_frames(2), None).visual)


def test_an_artifact_of_an_unknown_family_is_refused(model, tmp_path):
    path = save_model(model, tmp_path / "lewm.pt")
    payload = torch.load(path, weights_only=True)
    payload["family"] = "v-jepa-9"
    torch.save(payload, path)
    with pytest.raises(ArtifactError, match="family 'v-jepa-9'"):
        load_model(path)


def test_stats_with_proprio_are_refused():
    from models.lewm.testing import tiny_lewm_stats
    stats = tiny_lewm_stats()
    stats.proprio_mean, stats.proprio_std = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="pixels alone"):
        LeWM(TINY_LEWM, stats)


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_every_solver_plans_with_lewm(model, method):
    cfg = PlannerConfig.for_model(model, "cpu").updated(
        {"method": method, "horizon": 4, "max_iterations": 8, "min_iterations": 1, "objective": "last",
         "cem_gradient": {"gradient_iterations": 2}, "icem_gradient": {"gradient_iterations": 2}})
    with torch.inference_mode():
        z = model.encode_observation(_frames(2, seed=1), None)
    obs, goal = z.index(slice(0, 1)), z.index(slice(1, 2))
    (res,) = plan(model, obs, goal, cfg, seeds=[0])
    assert res.actions.shape == (4, TINY_LEWM.action_dim) and res.loss >= 0
    with torch.inference_mode():
        again = objective(model.rollout(obs, res.actions[None]), goal, "last", 0.0)
    assert again.item() == pytest.approx(res.loss, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("horizon", [2, 5])
def test_flop_model_counts_what_the_rollout_runs(horizon):
    from models.lewm.config import LeWMConfig
    model = LeWM(LeWMConfig(), tiny_lewm().stats).eval().requires_grad_(False)  # the published size
    z0 = Latent(torch.randn(1, 1, 192), torch.zeros(1, 0))
    actions = torch.randn(1, horizon, model.config.action_dim)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.rollout(z0, actions)
    predicted = rollout_flops(model.config, horizon).total
    assert predicted == pytest.approx(counter.get_total_flops(), rel=0.02)
    assert model.rollout_gflop(horizon) == pytest.approx(predicted / 1e9)


def test_reference_flop_count_matches_le_wms_window_recomputing_rollout():
    """`execution="reference"` prices le-wm's rollout (every block over the whole window,
    pred_proj on every window frame) for comparisons with its planner."""
    from models.lewm.config import LeWMConfig
    model = LeWM(LeWMConfig(), tiny_lewm().stats).eval().requires_grad_(False)
    z0, actions = torch.randn(1, 192), torch.randn(1, 5, model.config.action_dim)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        _reference_rollout(model, z0, actions)
    assert rollout_flops(model.config, 5, "reference").total == pytest.approx(counter.get_total_flops(), rel=0.02)
    assert rollout_flops(model.config, 5).total < 0.75 * rollout_flops(model.config, 5, "reference").total


@pytest.mark.parametrize("options", [{"dtype": "bf16"}, {"compile": True, "compile_backend": "eager"}],
                         ids=["bf16", "compiled"])
def test_inference_options_keep_fp32_outputs_close_to_fp32(options):
    from models.inference import InferenceConfig
    exact, other = tiny_lewm(seed=2), tiny_lewm(seed=2).configure_inference(InferenceConfig(**options))
    z0 = Latent(torch.randn(3, 1, TINY_LEWM.embed_dim), torch.zeros(3, 0))
    actions = torch.randn(3, 5, TINY_LEWM.action_dim)
    with torch.inference_mode():
        want, got = exact.rollout(z0, actions).visual, other.rollout(z0, actions).visual
        enc = other.encode(torch.randn(2, 3, 28, 28)).visual
    assert got.dtype == torch.float32 and enc.dtype == torch.float32
    tol = 1e-5 if options.get("compile") else 0.1 * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    assert other.describe()["inference"]["compiled"] is bool(options.get("compile"))
