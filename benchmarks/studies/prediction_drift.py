"""How far ahead latency compensation can predict: the latent after k predicted model steps
against the latent of the frame actually reached.

    python -m benchmarks.studies.prediction_drift [--model models/default/wall.pt] [--tasks 10] [--seed 0]
        [--steps 1,2,3,4] [--out FILE]

For each wall task start (``envs.tasks.wall_tasks("far", ...)``), k model steps
of uniform random actions are executed in the env and rolled through the model
(``WorldModel.rollout``, as the server does for ``pending_actions``). Reported
per k: the mean squared error of the predicted visual latent and the L2 error
of the predicted proprio embedding against the encoded frame reached, beside
the same errors of the start latent ("not moving": what a plan from the
uncompensated frame starts from).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from benchmarks import harness
from envs.tasks import wall_tasks
from envs.wall import WallEnv
from models import Latent, load_model


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("studies.prediction_drift", __doc__, quick=False)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="1,2,3,4")
    args = ap.parse_args(argv)
    result = harness.Result("prediction_drift", args)
    model = load_model(harness.wall_model(args.model), device="cpu")
    fs, env = model.config.frameskip, WallEnv()
    tasks = wall_tasks("far", args.tasks, args.seed, env, fs)
    rng = np.random.default_rng(args.seed)
    bound = env.layout.max_step

    def encode() -> Latent:
        with torch.inference_mode():
            return model.encode_observation(torch.from_numpy(env.render())[None],
                                            torch.from_numpy(env.proprio())[None].float())

    for k in (int(s) for s in args.steps.split(",")):
        errors = []
        for task in tasks:
            env.set_state(task.start)
            z0 = encode()
            actions = rng.uniform(-bound, bound, (k, 2)).repeat(fs, axis=0)  # (k * fs, 2) env units
            for a in actions:
                env.step(a)
            reached = encode()
            with torch.inference_mode():
                rolled = model.rollout(z0, model.codec.to_model(torch.from_numpy(actions).float())[None])
            pred = Latent(rolled.visual[:, -1], rolled.proprio[:, -1])
            errors.append([((pred.visual - reached.visual) ** 2).mean().item(),
                           ((z0.visual - reached.visual) ** 2).mean().item(),
                           (pred.proprio - reached.proprio).norm().item(),
                           (z0.proprio - reached.proprio).norm().item()])
        e = np.mean(errors, axis=0)
        result.add({"steps": k, "visual_mse_predicted": round(float(e[0]), 5), "visual_mse_not_moving": round(float(e[1]), 5),
                    "proprio_l2_predicted": round(float(e[2]), 4), "proprio_l2_not_moving": round(float(e[3]), 4)})
    return result.finish({"tasks": len(tasks), "action": f"uniform in +-{bound} px per env step, held for a model step"})


if __name__ == "__main__":
    sys.exit(main())
