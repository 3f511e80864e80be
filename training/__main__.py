"""python -m training --config CONFIG.json [--resume [latest|best]] [--lr LR] [--out DIR] [--dataset DIR]

Trains a world model and writes RUN_DIR/model.pt, a servable artifact with
its train-split statistics. Ctrl-C saves RUN_DIR/latest.pt; --resume continues
exactly where it stopped. --resume best rolls the current phase back to its
best epoch (what the monitor recommends after a divergence or a plateau),
with --lr LR as the phase's new learning rate if given (a fine-tune).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

import torch

from training.config import TrainConfig
from training.trainer import ResumeError, Trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="training config (JSON)")
    ap.add_argument("--out", help="run folder (overrides the config's 'out')")
    ap.add_argument("--dataset", help="dataset folder (overrides the config's 'dataset')")
    ap.add_argument("--resume", nargs="?", const="latest", choices=("latest", "best"),
                    help="latest (the default): continue exactly from OUT/latest.pt; best: restart the current "
                         "phase from its best epoch (fresh optimiser, later epochs' metrics archived)")
    ap.add_argument("--lr", type=float, help="with --resume best: the phase's learning rate from there on")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); results are bitwise "
                                                "reproducible only at the same count")
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads {args.threads}: must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = TrainConfig.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.lr is not None and args.resume != "best":
        print(f"error: --lr {args.lr} needs --resume best (resuming from latest is exact, at the saved rate)",
              file=sys.stderr)
        return 2
    overrides = {k: v for k, v in {"out": args.out, "dataset": args.dataset}.items() if v}
    cfg = dataclasses.replace(cfg, **overrides)
    t0 = time.monotonic()
    trainer = Trainer(cfg)
    try:
        state = trainer.run(resume=args.resume or False, lr=args.lr)
    except ResumeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"status": state.status, "phase": state.phase, "best_val": state.best_val,
                      "out": cfg.out, "wall_seconds": round(time.monotonic() - t0, 1)}))
    return 130 if state.status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
