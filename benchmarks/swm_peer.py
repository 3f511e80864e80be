"""stable-worldmodel's solvers in the same closed loop, on the same model and tasks, as ours.

    python -m benchmarks.swm_peer [--goals near far] [--episodes 20] [--cells swm_cem_100x15 ...]
                                  [--out FILE.json] [--quick]
    python -m benchmarks.solvers --report docs/benchmarks/solvers_near.jsonl docs/benchmarks/swm_near.jsonl

`stable-worldmodel` (PyPI; its `solver/` package: CEM, iCEM, MPPI, gradient
descent behind one `solve(info_dict, init_action)` interface) plans on the
shipped wall model (models/default/wall.pt) through a thin adapter that lives
here, never in the product:

* `WallCost` is its `Costable`: `get_cost(info_dict, candidates)` scores
  candidates (B, N, H, A) in the model's normalised action space with this
  project's chunked evaluator (`planning.evaluate.Evaluator`: the same rollout
  and the objective the model recommends, `all` with alpha 10), after clamping
  them to the model's action bounds (the env clips what it executes; iCEM
  clamps by itself). For the gradient solver the cost is differentiable
  (`planning.gradient.differentiable_rollout`); the weights stay frozen.
* `SWMPlanner` is `client_examples.closed_loop.Planner`: encode the frame, solve,
  execute one model step, replan warm the way its `WorldModelPolicy` does (the
  unexecuted rest of the last plan as `init_action`, zero-padded by the solver).
  Its config is the `PlanConfig` fields the solvers read (horizon 5,
  `action_block` = frameskip, receding horizon 1).

Rows have the fields of `benchmarks.solvers` (success, GFLOPs per plan counted
from the sequences the adapter scored, latency p50/p95, iterations), so both
land in one table. The solvers have no early stopping: they run all their
iterations, as shipped.

Install without letting pip replace the CPU torch: the package's own
requirements include torchvision, lancedb and pylance, which its solvers do not
use (PyPI's torchvision is a CUDA build and does not load beside a CPU torch):

    pip install --no-deps stable-worldmodel loguru     # loguru: the solvers' logger

Its top-level `__init__` imports all of it (data, envs, policy, world), so the
adapter imports `stable_worldmodel.solver` alone, with the package namespace
registered without running that `__init__`. --quick: 1 episode, tiny budgets.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import statistics
import sys
import time
import types
from typing import Any

import numpy as np
import torch

from benchmarks import harness
from envs.episodes import wall_episodes
from envs.tasks import WALL_BUDGETS as BUDGETS
from models import Latent, WorldModel, load_model
from models.flops import encoder_flops, rollout_flops
from planning import PlannerConfig, objective
from planning.evaluate import Evaluator
from planning.gradient import differentiable_rollout

HORIZON = 5
# name -> (solver class, its constructor arguments); budgets as the cells of benchmarks.solvers
CELLS: dict[str, tuple[str, dict[str, Any]]] = {
    "swm_cem_paper": ("CEMSolver", {"num_samples": 300, "topk": 30, "n_steps": 30}),
    "swm_cem_100x15": ("CEMSolver", {"num_samples": 100, "topk": 10, "n_steps": 15}),
    "swm_icem_50x10": ("ICEMSolver", {"num_samples": 50, "topk": 5, "n_steps": 10}),
    "swm_mppi_100x15": ("MPPISolver", {"num_samples": 100, "topk": 10, "n_steps": 15}),
    "swm_gd_4x15": ("GradientSolver", {"num_samples": 4, "n_steps": 15, "optimizer_cls": torch.optim.Adam,
                                       "optimizer_kwargs": {"lr": 0.1}}),  # our gradient_4x15's Adam step
}
DEFAULT_CELLS = ("swm_cem_100x15", "swm_icem_50x10", "swm_mppi_100x15", "swm_gd_4x15")
QUICK = {"num_samples": 8, "topk": 2, "n_steps": 2}


def import_solvers() -> types.ModuleType | None:
    """`stable_worldmodel.solver`, without the package's heavy top-level imports; None if not installed."""
    if "stable_worldmodel" not in sys.modules:
        spec = importlib.util.find_spec("stable_worldmodel")
        if spec is None or not spec.submodule_search_locations:
            return None
        pkg = types.ModuleType("stable_worldmodel")
        pkg.__path__, pkg.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["stable_worldmodel"] = pkg
    return importlib.import_module("stable_worldmodel.solver")


class WallCost:
    """stable-worldmodel's `Costable` over this project's model, for one problem at a time."""

    def __init__(self, model: WorldModel, cfg: PlannerConfig) -> None:
        self.model, self.cfg = model, cfg
        lo, hi = model.codec.model_bounds(model.config.action_low, model.config.action_high)
        self.low, self.high = lo, hi  # (A,) normalised
        self.evaluator: Evaluator | None = None
        self.z_obs: Latent | None = None
        self.z_goal: Latent | None = None
        self.grad_rollouts = 0

    def set_problem(self, z_obs: Latent, z_goal: Latent) -> None:
        self.z_obs, self.z_goal = z_obs, z_goal
        self.evaluator = Evaluator(self.model, z_obs, z_goal, self.cfg)
        self.grad_rollouts = 0

    @property
    def rollouts(self) -> int:
        return 0 if self.evaluator is None else int(self.evaluator.rollouts.sum())

    def get_cost(self, info_dict: dict, candidates: torch.Tensor) -> torch.Tensor:
        """info_dict["req"]: (B, N) problem index (always 0 here); candidates (B, N, H, A) -> costs (B, N)."""
        assert self.evaluator is not None and self.z_obs is not None and self.z_goal is not None
        cand = torch.maximum(torch.minimum(candidates, self.high), self.low)
        if not candidates.requires_grad:
            return self.evaluator(info_dict["req"][:, 0], cand)
        b, n, h, a = cand.shape  # the gradient solver: a differentiable cost
        expand = lambda z: Latent(z.visual.expand(b * n, *z.visual.shape[1:]),  # noqa: E731
                                  z.proprio.expand(b * n, -1))
        pred = differentiable_rollout(self.model, expand(self.z_obs), cand.reshape(b * n, h, a))
        self.grad_rollouts += b * n
        return objective(pred, expand(self.z_goal), self.cfg.objective, self.cfg.alpha, self.cfg.base).view(b, n)

    criterion = get_cost


class SWMPlanner:
    """Cold plans and warm replans (env actions) from one stable-worldmodel solver."""

    def __init__(self, model: WorldModel, solver: Any, cost: WallCost) -> None:
        self.model, self.solver, self.cost = model, solver, cost
        self.frameskip = model.config.frameskip
        self.goal: Latent | None = None
        self.last: torch.Tensor | None = None  # (H, A) the last plan, normalised
        self.records: list[dict[str, float]] = []

    def _encode(self, frame: np.ndarray, proprio: np.ndarray) -> Latent:
        with torch.no_grad():  # not inference mode: the gradient solver differentiates through these latents
            return self.model.encode_observation(torch.from_numpy(frame[None]),
                                                 torch.from_numpy(proprio[None].astype(np.float32)))

    def _plan(self, frame: np.ndarray, proprio: np.ndarray, init: torch.Tensor | None) -> np.ndarray:
        assert self.goal is not None
        t0 = time.perf_counter()
        self.cost.set_problem(self._encode(frame, proprio), self.goal)
        with contextlib.redirect_stdout(sys.stderr):  # each solve prints its time
            out = self.solver.solve({"req": torch.zeros(1, dtype=torch.long)},
                                    init_action=None if init is None or len(init) == 0 else init[None])
        actions = torch.maximum(torch.minimum(out["actions"][0].detach(), self.cost.high), self.cost.low)  # (H, A)
        ms = 1000 * (time.perf_counter() - t0)
        self.last = actions
        self.records.append({"ms": ms, "rollouts": self.cost.rollouts, "grad_rollouts": self.cost.grad_rollouts})
        with torch.inference_mode():
            return self.model.codec.to_env(actions).cpu().numpy()

    def plan(self, obs: np.ndarray, proprio: np.ndarray, goal: np.ndarray, goal_proprio: np.ndarray) -> np.ndarray:
        self.goal = self._encode(goal, goal_proprio)
        return self._plan(obs, proprio, None)

    def replan(self, obs: np.ndarray, proprio: np.ndarray, executed_steps: int) -> np.ndarray:
        assert self.last is not None
        return self._plan(obs, proprio, self.last[executed_steps:])  # WorldModelPolicy's warm start


class SWMClient:
    """The slice of `wm_client.PlanningClient` that the project's one episode runner (`envs.episodes`, on
    `wm_client.ControlLoop`) calls, answered by an `SWMPlanner`: the peer runs in the same loop as ours."""

    def __init__(self, planner: SWMPlanner) -> None:
        self.planner = planner

    def wait_ready(self, timeout: float = 0.0) -> dict[str, Any]:
        return {"model": {"frameskip": self.planner.frameskip}}

    def _reply(self, actions: np.ndarray) -> dict[str, Any]:
        return {"actions": actions.tolist(), "frameskip": self.planner.frameskip, "session_id": "swm",
                "served_by": "stable-worldmodel"}

    def plan(self, obs: np.ndarray, goal: np.ndarray, proprio: np.ndarray, goal_proprio: np.ndarray,
             **_: Any) -> dict[str, Any]:
        return self._reply(self.planner.plan(obs, np.asarray(proprio), goal, np.asarray(goal_proprio)))

    def replan(self, session_id: str, obs: np.ndarray, proprio: np.ndarray, executed_steps: int = 1,
               **_: Any) -> dict[str, Any]:
        return self._reply(self.planner.replan(obs, np.asarray(proprio), executed_steps))

    def delete_session(self, session_id: str) -> None:
        """Nothing to end: the planner keeps only the last plan."""


def make_solver(solvers: types.ModuleType, name: str, cost: WallCost, model: WorldModel, seed: int,
                quick: bool) -> tuple[Any, dict[str, Any]]:
    cls_name, kwargs = CELLS[name]
    kwargs = dict(kwargs)
    if quick:
        kwargs.update({k: v for k, v in QUICK.items() if k in kwargs and (k != "num_samples" or v < kwargs[k])})
    solver = getattr(solvers, cls_name)(model=cost, var_scale=1.0, device="cpu", seed=seed, **kwargs)
    gym = importlib.import_module("gymnasium")
    c = model.config
    raw = slice(0, c.raw_action_dim)  # normalised bounds of one env step; solvers tile them by action_block
    space = gym.spaces.Box(low=np.tile(cost.low[raw].numpy(), (1, 1)), high=np.tile(cost.high[raw].numpy(), (1, 1)),
                           dtype=np.float32)
    config = types.SimpleNamespace(horizon=HORIZON, receding_horizon=1, history_len=1, action_block=c.frameskip,
                                   warm_start=True)  # the PlanConfig fields its solvers read
    solver.configure(action_space=space, n_envs=1, config=config)
    shown = {k: (v.__name__ if isinstance(v, type) else v) for k, v in kwargs.items()}
    return solver, {"solver": cls_name, **shown}


def run_cell(model: WorldModel, solvers: types.ModuleType, name: str, goals: str, episodes: int, seed: int,
             quick: bool) -> dict[str, Any]:
    cfg = harness.planner(model, "cuda")  # only the objective, alpha and base are used: the model's own
    cost = WallCost(model, cfg)
    solver, shown = make_solver(solvers, name, cost, model, seed, quick)
    planner = SWMPlanner(model, solver, cost)
    t0 = time.perf_counter()
    outcomes = list(wall_episodes(SWMClient(planner), episodes, seed, goals))
    c = model.config
    fwd, grad = rollout_flops(c, HORIZON, "cached").total, 3 * rollout_flops(c, HORIZON, "recompute").total
    rec = planner.records
    gf = [(r["rollouts"] * fwd + r["grad_rollouts"] * grad + encoder_flops(c)) / 1e9 for r in rec]
    ms = [r["ms"] for r in rec]
    return {
        "cell": name, "method": "swm-" + shown["solver"].removesuffix("Solver").lower(), "goals": goals,
        "episodes": episodes, "seed": seed, "num_samples": shown.get("num_samples"), "opt_steps": shown["n_steps"],
        "success_rate": sum(o.success for o in outcomes) / len(outcomes),
        "successes": sum(o.success for o in outcomes),
        "mean_steps": statistics.fmean(o.steps for o in outcomes),
        "plans": len(rec), "gflops_per_plan": statistics.fmean(gf), "mean_iterations": float(shown["n_steps"]),
        "plan_ms_p50": float(np.percentile(ms, 50)), "plan_ms_p95": float(np.percentile(ms, 95)),
        "stop_reasons": {"max_iterations": len(rec)}, "wall_s": round(time.perf_counter() - t0, 1),
        "load_average_1m": harness.load_average()[0],
        "config": {**shown, "objective": cfg.objective, "alpha": cfg.alpha, "package": _version()},
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "stable-worldmodel " + version("stable-worldmodel")
    except PackageNotFoundError:
        return "stable-worldmodel (unknown version)"


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("swm_peer", __doc__)
    ap.add_argument("--goals", nargs="+", choices=sorted(BUDGETS), default=["near"])
    ap.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=list(DEFAULT_CELLS))
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    solvers = import_solvers()
    if solvers is None:
        print("stable-worldmodel is not installed: pip install --no-deps stable-worldmodel loguru", file=sys.stderr)
        return 2
    path = harness.wall_model(args.model)
    result = harness.Result("swm_peer", args)
    model = load_model(path, device="cpu")
    for goals in args.goals:
        for name in args.cells:
            result.add(run_cell(model, solvers, name, goals, 1 if args.quick else args.episodes, args.seed, args.quick))
    return result.finish({"model": str(path), "peer": _version()})


if __name__ == "__main__":
    sys.exit(main())
