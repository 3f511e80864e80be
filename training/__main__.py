"""python -m training --config CONFIG.json [--resume] [--out DIR] [--dataset DIR]

Trains a world model and writes RUN_DIR/model.pt, a servable artifact with
its train-split statistics. Ctrl-C saves RUN_DIR/latest.pt; --resume continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time

from training.config import TrainConfig
from training.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="training config (JSON)")
    ap.add_argument("--out", help="run folder (overrides the config's 'out')")
    ap.add_argument("--dataset", help="dataset folder (overrides the config's 'dataset')")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = TrainConfig.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in {"out": args.out, "dataset": args.dataset}.items() if v}
    cfg = dataclasses.replace(cfg, **overrides)
    t0 = time.monotonic()
    state = Trainer(cfg).run(resume=args.resume)
    print(json.dumps({"status": state.status, "phase": state.phase, "best_val": state.best_val,
                      "out": cfg.out, "wall_seconds": round(time.monotonic() - t0, 1)}))
    return 130 if state.status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
