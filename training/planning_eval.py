"""Closed-loop planning success of a world model, during training and after it.

A low prediction loss does not guarantee good plans, so the trainer measures
the real task: every `planning_eval.every` predictor epochs it plans with the
current model on a fixed set of held-out tasks of the dataset's environment
and logs the success rate beside the losses (training/trainer.py). The same
evaluator runs on artifacts:

    python -m training.planning_eval --model runs/wall/model.pt --episodes 10 --seed 1000
    python -m training.planning_eval --run runs/pusht --episodes 50 --seed 1000   # every snapshots/*.pt

`--model` prints one JSON summary; `--run` evaluates each snapshot of a run
folder (`predictor.snapshot_every`), writes RUN/planning_eval.jsonl (one row
per snapshot with its epoch and validation loss from metrics.jsonl) and
RUN/planning_eval.png (success and val loss against epochs), and prints the
rows.

Environments come from one small registry (`SUITES`), keyed by the dataset's
meta.json `env`: each entry runs its tasks (envs/tasks.py) with the project's
one episode runner (envs.episodes, on wm_client.ControlLoop) against an
in-process `server.local.LocalClient`, which plans as the server does with
the model's serving defaults; the trainer has no env-specific code.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from envs.tasks import PUSHT_BUDGET, WALL_BUDGETS
from training.config import PlanningEvalConfig

log = logging.getLogger(__name__)
__all__ = ["PlanningEvalResult", "SUITES", "evaluate", "evaluate_artifact", "evaluate_run", "servable_copy", "suite"]

# An evaluation's episodes: (client, episodes, seed, task kind, budget, execute, planner overrides, record) -> the
# one episode runner's results (envs.episodes.EpisodeResult), yielded as each finishes; with record, each carries
# its executed trajectory in the dataset format (self-improvement, training/self_improve.py).
Episodes = Callable[[Any, int, int, str, int, int, "Mapping[str, Any] | None", bool], Iterator[Any]]


@dataclass(frozen=True)
class Suite:
    """How planning is evaluated in one environment: its task kinds and their default budgets, and its
    episodes (tasks from envs/tasks.py, run by envs.episodes on wm_client.ControlLoop)."""

    budgets: Mapping[str, int]  # task kind -> default budget (model steps)
    episodes: Episodes


def _wall() -> Suite:
    from envs.episodes import wall_episodes

    return Suite(WALL_BUDGETS, lambda client, n, seed, kind, budget, execute, planner, record=False: wall_episodes(
        client, n, seed, kind, execute=execute, planner=planner, budget=budget, record=record))


def _pusht() -> Suite:
    try:
        import gym_pusht  # noqa: F401
    except ImportError:
        raise ValueError("planning_eval on a PushT dataset needs the pusht extra: pip install -e '.[pusht]'") from None
    from envs.episodes import pusht_episodes

    return Suite({"near": PUSHT_BUDGET}, lambda client, n, seed, kind, budget, execute, planner, record=False:
                 pusht_episodes(client, n, seed, budget=budget, execute=execute, planner=planner, record=record))


SUITES: dict[str, Callable[[], Suite]] = {"wall": _wall, "pusht": _pusht}


def suite(env: str) -> Suite:
    if env not in SUITES:
        raise ValueError(f"no planning evaluation for env {env!r}; known: {sorted(SUITES)} "
                         "(add one to training.planning_eval.SUITES)")
    return SUITES[env]()


def check(env: str, cfg: PlanningEvalConfig) -> None:
    """Fail before training when the evaluation could not run (unknown env or task kind, missing extra)."""
    s = suite(env)
    if cfg.tasks not in s.budgets:
        raise ValueError(f"planning_eval.tasks={cfg.tasks!r}: env {env!r} has {sorted(s.budgets)}")


def servable_copy(model: Any, planner: Mapping[str, Any]) -> Any:
    """The model as `load_model` would serve it (eval mode, no gradients, the trainer's planner
    recommendation in its metadata), leaving the training model untouched."""
    served = copy.deepcopy(model).eval().requires_grad_(False)
    served.metadata = {**getattr(model, "metadata", {}), "planner": dict(planner)}
    return served


@dataclass(frozen=True)
class PlanningEvalResult:
    success_rate: float  # over the episodes that ran
    episodes: int  # episodes that ran (fewer than requested when max_seconds ran out)
    requested: int
    seconds: float
    mean_steps: float  # model steps executed per episode (a success stops early)
    env: str
    tasks: str
    seed: int
    budget: int
    plan_ms_p50: float = math.nan  # per plan or replan, as the in-process client saw it
    plan_ms_p95: float = math.nan

    def row(self) -> dict[str, float | int]:
        """The keys the trainer adds to its metrics row."""
        return {"planning_success": self.success_rate, "planning_episodes": self.episodes,
                "planning_seconds": round(self.seconds, 3), "planning_mean_steps": self.mean_steps}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(model: Any, cfg: PlanningEvalConfig, env: str) -> PlanningEvalResult:
    """Closed-loop success of a servable `model` (eval mode) on `cfg.episodes` tasks of `env`.

    The tasks and plan seeds depend only on `cfg.seed`, so every call sees the
    same tasks. No episode starts after `cfg.max_seconds`; the first always runs.
    Torch's global RNG is left as it was (a resumed training run stays exact).
    """
    from server.local import LocalClient

    check(env, cfg)
    s = suite(env)
    budget = cfg.budget or s.budgets[cfg.tasks]
    t0 = time.monotonic()
    outcomes: list[tuple[bool, int]] = []
    plan_ms: list[float] = []
    with torch.random.fork_rng(devices=[]), LocalClient(model) as client:
        episodes = s.episodes(client, cfg.episodes, cfg.seed, cfg.tasks, budget, cfg.execute, cfg.planner or None)
        for result in episodes:  # tasks are drawn up front, episodes run one by one: the bound stops between them
            outcomes.append((result.success, result.steps))
            plan_ms.extend(result.plan_ms)
            if time.monotonic() - t0 >= cfg.max_seconds:
                break
        episodes.close()
    seconds = time.monotonic() - t0
    if len(outcomes) < cfg.episodes:
        log.warning("planning eval: max_seconds=%g spent after %d of %d episodes", cfg.max_seconds, len(outcomes),
                    cfg.episodes)
    return PlanningEvalResult(success_rate=sum(ok for ok, _ in outcomes) / len(outcomes), episodes=len(outcomes),
                              requested=cfg.episodes, seconds=seconds,
                              mean_steps=statistics.fmean(steps for _, steps in outcomes), env=env, tasks=cfg.tasks,
                              seed=cfg.seed, budget=budget, plan_ms_p50=_percentile(plan_ms, 50),
                              plan_ms_p95=_percentile(plan_ms, 95))


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))])


# Artifacts ---------------------------------------------------------------------------------------------
def artifact_env(metadata: Mapping[str, Any]) -> str | None:
    """The environment an artifact was trained in: its metadata's `env`, else its dataset's meta.json."""
    if metadata.get("env"):
        return str(metadata["env"])
    dataset = metadata.get("dataset")
    meta = Path(dataset) / "meta.json" if dataset else None
    if meta is not None and meta.is_file():
        return json.loads(meta.read_text()).get("env")
    return None


def evaluate_artifact(path: str | Path, cfg: PlanningEvalConfig, env: str | None = None) -> PlanningEvalResult:
    from models import load_model

    model = load_model(path)
    env = env or artifact_env(model.metadata)
    if env is None:
        raise ValueError(f"{path}: its metadata names no env and its dataset is not here; pass --env")
    return evaluate(model, cfg, env)


def evaluate_run(run: str | Path, cfg: PlanningEvalConfig, env: str | None = None) -> list[dict[str, Any]]:
    """Evaluate every snapshots/*.pt of a run folder; rows with epoch, val loss, success; writes the JSONL and plot."""
    run = Path(run)
    snapshots = sorted((run / "snapshots").glob("*.pt"))
    if not snapshots:
        raise ValueError(f"{run / 'snapshots'}: no snapshots; train with predictor.snapshot_every > 0")
    val = _val_losses(run)
    rows = []
    for path in snapshots:
        from models.artifact import read_artifact

        epoch = int(read_artifact(path)["metadata"].get("predictor_epoch", 0))
        result = evaluate_artifact(path, cfg, env)
        rows.append({"snapshot": path.name, "epoch": epoch, "val_loss": val.get(epoch, math.nan),
                     **result.row(), "planning": result.to_dict()})
        log.info("%s: success %.2f (%d episodes) val %.5g", path.name, result.success_rate, result.episodes,
                 rows[-1]["val_loss"])
    (run / "planning_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_success(rows, run / "planning_eval.png", title=f"{run.name}: planning success of each snapshot")
    return rows


def _val_losses(run: Path) -> dict[int, float]:
    """Validation loss per predictor epoch, from the run's metrics.jsonl (empty without one)."""
    from training.monitor import read_metrics

    path = run / "metrics.jsonl"
    rows = read_metrics(path) if path.is_file() else []
    return {int(r["epoch"]): float(r["val_loss"]) for r in rows if r.get("phase") == "predictor" and "val_loss" in r}


def plot_success(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Success (left axis) and validation loss (right axis, log) against epochs."""
    from matplotlib.figure import Figure

    from training.monitor import add_planning_success

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["val_loss"] for r in rows], ".-", color="tab:orange", label="val loss")
    ax.set_yscale("log")
    ax.set_xlabel("predictor epoch")
    ax.set_ylabel("val loss")
    ax.grid(alpha=0.3)
    add_planning_success(ax, rows)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.planning_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a model artifact: print one JSON summary")
    what.add_argument("--run", help="a run folder: evaluate every snapshots/*.pt, write planning_eval.jsonl/.png")
    ap.add_argument("--env", help="the environment (default: the artifact's metadata or its dataset's meta.json)")
    d = PlanningEvalConfig()
    ap.add_argument("--episodes", type=int, default=d.episodes)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--tasks", default=d.tasks, help="task kind (wall: near|far; pusht: near)")
    ap.add_argument("--budget", type=int, help="model steps per episode (default: the task kind's)")
    ap.add_argument("--execute", type=int, default=d.execute, help="model steps executed between replans")
    ap.add_argument("--planner", type=json.loads, default={}, help='planner overrides as JSON, e.g. \'{"max_iterations": 10}\'')
    ap.add_argument("--max-seconds", type=float, default=3600.0,
                    help="per model: no episode starts after this many seconds (default 3600)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: with torch's default of one per core, an evaluation "
                         "beside any other job ran 40x slower on a 2-core machine; docs/benchmarks.md section 11)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: must be >= 1")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = PlanningEvalConfig(every=0, episodes=args.episodes, tasks=args.tasks, seed=args.seed, budget=args.budget,
                                 execute=args.execute, planner=args.planner, max_seconds=args.max_seconds)
        if args.model:
            print(json.dumps(evaluate_artifact(args.model, cfg, args.env).to_dict()))
        else:
            for row in evaluate_run(args.run, cfg, args.env):
                print(json.dumps(row))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
