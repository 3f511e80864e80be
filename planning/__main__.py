"""Planner demo: `python -m planning [--model PATH]` plans once on random frames and prints the result."""

from __future__ import annotations

import argparse
import json
import time

import torch

from models import load_model
from models.testing import tiny_model
from planning import PlannerConfig, plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="model artifact (default: a tiny random model)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = load_model(args.model) if args.model else tiny_model()
    c = model.config
    g = torch.Generator().manual_seed(args.seed)
    obs, goal = torch.randint(0, 256, (2, 1, c.image_size, c.image_size, 3), dtype=torch.uint8, generator=g)
    proprio = torch.zeros(1, c.proprio_dim) if c.proprio_dim else None
    z_obs, z_goal = model.encode_observation(obs, proprio), model.encode_observation(goal, proprio)
    t0 = time.perf_counter()
    (res,) = plan(model, z_obs, z_goal, PlannerConfig.cpu_preset(), seeds=[args.seed])
    ms = 1000 * (time.perf_counter() - t0)
    print(json.dumps({"model": c.name, "env_actions": model.codec.to_env(res.actions).tolist(), "loss": res.loss,
                      "iterations": res.iterations, "stop_reason": res.stop_reason, "plan_ms": round(ms, 1)}))


if __name__ == "__main__":
    main()
