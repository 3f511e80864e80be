"""Self-improvement: plan with the current model in its environment, keep what it did, retrain on the union.

    python -m training.self_improve --config configs/pusht.json --model models/default/pusht.pt \\
        --out runs/pusht-si --rounds 1 --episodes 200 --chunk 25 \\
        --overrides '{"predictor": {"epochs": 8, "lr": 3e-4}}' --eval-episodes 50 --eval-seed 2

Random or scripted collection rarely reaches the states the model's own plans lead to, and those are where
its errors cost success. A round (DAgger-like, for any environment in training.planning_eval.SUITES; nothing
here knows one):

  1. collect  `episodes` tasks of the base dataset's environment, from *training* seeds (>= TRAIN_SEEDS, never
              the small seeds evaluations use), planned closed-loop with the current model exactly as the
              evaluation plans (server.local.LocalClient, the model's serving defaults, envs.episodes); every
              executed trajectory, successful or not, is kept (frames, actions, proprio, states), in chunks of
              `chunk` episodes: OUT/round-NN/chunks/NNN, each a dataset (envs/dataset.py) that exists only
              once complete, with its episodes' success in its meta.json.
  2. union    the base dataset + the chunks of this and every earlier round -> OUT/round-NN/data.
  3. train    the config's training on the union, starting from the current model (TrainConfig.init_from: its
              weights and statistics, its architecture), by default with the encoder frozen (encoder.epochs
              0; `--from-scratch` trains the config from random weights instead) -> OUT/round-NN/train;
              its model.pt is the next round's model.
  4. eval     optionally, the new model's success on `--eval-episodes` tasks of `--eval-seed`.

Ledger: OUT/self_improve.jsonl, one row per finished stage of a round (data sizes, collection success of the
model that collected, training status and wall time, evaluation success). Resume by running the same command
again: finished chunks and unions are kept, training resumes exactly from its latest.pt
(training/trainer.py), stages in the ledger are not redone. `--rounds` may grow between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from tqdm import tqdm

from envs.dataset import Episode, load_dataset, write_dataset
from training import planning_eval
from training.config import PlanningEvalConfig, TrainConfig

log = logging.getLogger(__name__)
__all__ = ["SelfImproveConfig", "TRAIN_SEEDS", "collect_round", "run", "train_config", "union"]

# Task seeds of self-improvement start here; evaluations use small seeds (the docs' 0-3, the trainer's
# planning check 1000), so the tasks a model is retrained on are never the ones it is judged on.
TRAIN_SEEDS = 10_000
SEEDS_PER_ROUND = 1000  # chunk c of round r draws its tasks from seed base + r * 1000 + c
LEDGER = "self_improve.jsonl"


@dataclasses.dataclass(frozen=True)
class SelfImproveConfig:
    """Args:
    config: training config (JSON); its phases, seed, alpha and planner recommendation train each round.
    model: the model the first round plans with.
    out: run folder (rounds, ledger).
    dataset: the base dataset (default: the config's).
    rounds: rounds to have finished when the command ends.
    episodes: tasks collected per round; chunk: episodes per chunk (the unit of resume).
    seed: first task seed (>= TRAIN_SEEDS).
    tasks, budget, execute, planner: the episodes' task kind, model-step budget, steps between replans and
        planner overrides (default: the environment's evaluation settings and the model's serving planner).
    overrides: training-config overrides for a round, merged into the config (e.g. {"predictor": {"epochs": 8}}).
    from_scratch: train each round from random weights (the config's model) instead of the current model.
    eval_episodes, eval_seed: evaluate each round's model on these tasks (0 = no evaluation).
    repeat: each self-collected episode appears this many times in the union (its weight in the batches).
    """

    config: str
    model: str
    out: str
    dataset: str | None = None
    rounds: int = 1
    episodes: int = 200
    chunk: int = 25
    seed: int = TRAIN_SEEDS
    tasks: str = "near"
    budget: int | None = None
    execute: int = 1
    planner: dict[str, Any] = dataclasses.field(default_factory=dict)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    from_scratch: bool = False
    eval_episodes: int = 0
    eval_seed: int = 2
    repeat: int = 1

    def __post_init__(self) -> None:
        for name in ("rounds", "episodes", "chunk", "execute", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.seed < TRAIN_SEEDS:
            raise ValueError(f"seed={self.seed}: self-improvement seeds start at {TRAIN_SEEDS}; smaller seeds are "
                             "the evaluations' (0-3 in the docs, 1000 in the trainer's planning check)")
        if self.eval_episodes and self.eval_seed >= TRAIN_SEEDS:
            raise ValueError(f"eval_seed={self.eval_seed}: seeds >= {TRAIN_SEEDS} are self-improvement's training "
                             "tasks; evaluate on a smaller seed")
        if -(-self.episodes // self.chunk) > SEEDS_PER_ROUND:
            raise ValueError(f"episodes={self.episodes}, chunk={self.chunk}: more than {SEEDS_PER_ROUND} chunks a round")


# Ledger ------------------------------------------------------------------------------------------------
def read_ledger(out: Path) -> list[dict[str, Any]]:
    path = out / LEDGER
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a write cut short by a kill: that stage is redone
            continue
    return rows


def _done(ledger: list[dict[str, Any]], round_: int, stage: str) -> dict[str, Any] | None:
    return next((r for r in ledger if r.get("round") == round_ and r.get("stage") == stage), None)


def _append(out: Path, ledger: list[dict[str, Any]], row: dict[str, Any]) -> None:
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **row}
    with open(out / LEDGER, "a") as f:
        f.write(json.dumps(row) + "\n")
    ledger.append(row)
    log.info("self-improve round %d %s: %s", row["round"], row["stage"],
             {k: v for k, v in row.items() if k not in ("round", "stage", "time")})


# Stages ------------------------------------------------------------------------------------------------
def _round_dir(out: Path, round_: int) -> Path:
    return out / f"round-{round_:02d}"


def collect_round(model_path: str | Path, env: str, cfg: SelfImproveConfig, round_: int, out: Path,
                  progress: bool | None = None) -> dict[str, Any]:
    """Collect round `round_`'s episodes into its chunks, skipping the chunks already on disk; its summary
    (episodes, frames, successes) read back from every chunk's meta.json."""
    from models import load_model
    from server.local import LocalClient

    chunks = _round_dir(out, round_) / "chunks"
    sizes = [min(cfg.chunk, cfg.episodes - i) for i in range(0, cfg.episodes, cfg.chunk)]
    pending = [c for c in range(len(sizes)) if not (chunks / f"{c:03d}" / "meta.json").is_file()]
    if pending:
        suite = planning_eval.suite(env)
        budget = cfg.budget or suite.budgets[cfg.tasks]
        model = load_model(model_path)
        done = sum(sizes) - sum(sizes[c] for c in pending)
        bar = tqdm(total=sum(sizes), initial=done, desc=f"self-improve round {round_} collect",
                   disable=None if progress is None else not progress)
        with torch.random.fork_rng(devices=[]), LocalClient(model) as client:
            for c in pending:
                seed = cfg.seed + round_ * SEEDS_PER_ROUND + c
                results = suite.episodes(client, sizes[c], seed, cfg.tasks, budget, cfg.execute,
                                         cfg.planner or None, True)
                episodes, successes = [], []
                for result in results:
                    episodes.append(result.trajectory)
                    successes.append(bool(result.success))
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(successes)}/{len(successes)}")
                write_dataset(chunks / f"{c:03d}", episodes, {
                    "env": env, "seed": seed, "policy": "self_improve",
                    "self_improve": {"round": round_, "chunk": c, "model": str(model_path), "tasks": cfg.tasks,
                                     "budget": budget, "execute": cfg.execute, "planner": cfg.planner,
                                     "success": successes}})
                log.info("round %d chunk %d (seed %d): %d/%d successes", round_, c, seed, sum(successes),
                         len(successes))
        bar.close()
    episodes = frames = successes = 0
    for c in range(len(sizes)):
        meta = json.loads((chunks / f"{c:03d}" / "meta.json").read_text())
        episodes += meta["num_episodes"]
        frames += meta["num_frames"]
        successes += sum(meta["self_improve"]["success"])
    return {"episodes": episodes, "frames": frames, "successes": successes,
            "collect_success": successes / episodes, "collected_by": str(model_path)}


def _chunk_dirs(out: Path, last_round: int) -> list[Path]:
    return [p.parent for r in range(1, last_round + 1)
            for p in sorted((_round_dir(out, r) / "chunks").glob("[0-9]*/meta.json"))]  # not write_dataset's temp


def union(base: str | Path, parts: list[Path], path: Path, repeat: int = 1) -> dict[str, Any]:
    """Write the base dataset followed by `parts` (datasets of the same env and shapes), each part's episodes
    `repeat` times, as one dataset. Batches draw windows uniformly, so a few hundred planned episodes beside
    thousands of collected ones would be a few percent of them; repeating weighs them up (the copies may fall
    on both sides of the train/val split: the validation loss of such a run is optimistic)."""
    datasets = [load_dataset(base), *(load_dataset(p) for p in parts)]
    env = datasets[0].meta["env"]
    for ds in datasets[1:]:
        if ds.meta["env"] != env or ds.frames.shape[1:] != datasets[0].frames.shape[1:]:
            raise ValueError(f"{ds.path}: env {ds.meta['env']!r}, frames {ds.frames.shape[1:]}; the base "
                             f"{datasets[0].path} has {env!r}, {datasets[0].frames.shape[1:]}")

    def episodes() -> Iterator[Episode]:
        for j, ds in enumerate(datasets):
            for _ in range(1 if j == 0 else repeat):
                for i in range(ds.num_episodes):
                    yield ds.episode(i)

    meta = {"env": env, "policy": "union", "repeat": repeat,
            "sources": [{"path": str(ds.path), "episodes": ds.num_episodes, "frames": ds.num_frames}
                        for ds in datasets]}
    if "seed" in datasets[0].meta:  # the base's collection seed: the trainer keeps its planning check off it
        meta["seed"] = datasets[0].meta["seed"]
    write_dataset(path, episodes(), meta, overwrite=True)
    added = datasets[1:]
    return {"base_episodes": datasets[0].num_episodes, "base_frames": datasets[0].num_frames,
            "added_episodes": sum(d.num_episodes for d in added), "added_frames": sum(d.num_frames for d in added),
            "repeat": repeat}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def train_config(cfg: SelfImproveConfig, model_path: str | Path, data: Path, out: Path) -> TrainConfig:
    """The round's training config: the config with `overrides`, on the union, from the current model
    (its architecture and weights) unless `from_scratch`; the encoder frozen by default when fine-tuning."""
    from models.artifact import read_artifact

    d = TrainConfig.load(cfg.config).to_dict()
    d.update(dataset=str(data), out=str(out))
    if not cfg.from_scratch:
        d["model"] = read_artifact(model_path)["config"]
        d["init_from"] = str(model_path)
        d["encoder"]["epochs"] = 0
    return TrainConfig.from_dict(_merge(d, cfg.overrides))


def run(cfg: SelfImproveConfig, progress: bool | None = None) -> list[dict[str, Any]]:
    """Run (or resume) rounds until `cfg.rounds` are finished; the ledger's rows."""
    from training.trainer import Trainer

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "self_improve.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    base = cfg.dataset or TrainConfig.load(cfg.config).dataset
    env = load_dataset(base).meta["env"]
    planning_eval.suite(env)  # fail now on an environment without a suite or a missing extra
    ledger = read_ledger(out)
    model = Path(cfg.model)
    for r in range(1, cfg.rounds + 1):
        rd = _round_dir(out, r)
        if not _done(ledger, r, "collect"):
            _append(out, ledger, {"round": r, "stage": "collect", **collect_round(model, env, cfg, r, out, progress)})
        if not _done(ledger, r, "data"):
            _append(out, ledger, {"round": r, "stage": "data", "path": str(rd / "data"),
                                  **union(base, _chunk_dirs(out, r), rd / "data", cfg.repeat)})
        if not _done(ledger, r, "train"):
            tc = train_config(cfg, model, rd / "data", rd / "train")
            t0 = time.monotonic()
            state = Trainer(tc, progress=progress).run(resume=(rd / "train" / "latest.pt").is_file())
            if state.status == "interrupted":
                log.warning("round %d training interrupted; run the same command again to resume", r)
                return ledger
            _append(out, ledger, {"round": r, "stage": "train", "model": str(rd / "train" / "model.pt"),
                                  "init_from": tc.init_from, "status": state.status, "best_val": state.best_val,
                                  "wall_seconds": round(time.monotonic() - t0, 1)})
        model = rd / "train" / "model.pt"
        if cfg.eval_episodes and not _done(ledger, r, "eval"):
            pe = PlanningEvalConfig(episodes=cfg.eval_episodes, seed=cfg.eval_seed, tasks=cfg.tasks,
                                    budget=cfg.budget, execute=cfg.execute, planner=cfg.planner,
                                    max_seconds=1e9)  # every episode: the ledger's figure is on all of them
            result = planning_eval.evaluate_artifact(model, pe, env)
            _append(out, ledger, {"round": r, "stage": "eval", "model": str(model), **result.to_dict()})
    return ledger


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.self_improve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="training config (JSON)")
    ap.add_argument("--model", required=True, help="the model the first round plans with")
    ap.add_argument("--out", required=True, help="run folder: rounds and the ledger self_improve.jsonl")
    ap.add_argument("--dataset", help="base dataset (default: the config's)")
    d = SelfImproveConfig(config="", model="", out="")
    ap.add_argument("--rounds", type=int, default=d.rounds)
    ap.add_argument("--episodes", type=int, default=d.episodes, help="tasks collected per round")
    ap.add_argument("--chunk", type=int, default=d.chunk, help="episodes per chunk (the unit of resume)")
    ap.add_argument("--seed", type=int, default=d.seed, help=f"first task seed (>= {TRAIN_SEEDS})")
    ap.add_argument("--tasks", default=d.tasks)
    ap.add_argument("--budget", type=int)
    ap.add_argument("--execute", type=int, default=d.execute)
    ap.add_argument("--planner", type=json.loads, default={}, help="planner overrides (JSON)")
    ap.add_argument("--overrides", type=json.loads, default={}, help="training-config overrides (JSON)")
    ap.add_argument("--from-scratch", action="store_true", help="train each round from random weights")
    ap.add_argument("--eval-episodes", type=int, default=0)
    ap.add_argument("--eval-seed", type=int, default=d.eval_seed)
    ap.add_argument("--repeat", type=int, default=d.repeat,
                    help="times each self-collected episode appears in the union (its weight in the batches)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: more collapses beside any other job on a small CPU)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: must be >= 1")
    torch.set_num_threads(args.threads)
    try:
        cfg = SelfImproveConfig(
            config=args.config, model=args.model, out=args.out, dataset=args.dataset, rounds=args.rounds,
            episodes=args.episodes, chunk=args.chunk, seed=args.seed, tasks=args.tasks, budget=args.budget,
            execute=args.execute, planner=args.planner, overrides=args.overrides, from_scratch=args.from_scratch,
            eval_episodes=args.eval_episodes, eval_seed=args.eval_seed, repeat=args.repeat)
        for row in run(cfg):
            print(json.dumps(row))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
