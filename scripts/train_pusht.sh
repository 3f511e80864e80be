#!/usr/bin/env bash
# Reproduce the shipped PushT model (models/default/pusht.pt) from scratch:
# collect gym-pusht data, train, and copy the best model into place.
# Needs the pusht extra (make setup installs it). Wall time on the 2-core CPU
# it was made on: see docs/training.md ("The PushT model").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -f data/pusht/meta.json ] || "$PY" -m envs.collect_pusht --out data/pusht --episodes 3000 --steps 50 --seed 0 --toward-prob 0.6
"$PY" -m training --config configs/pusht.json --threads 1 "$@"  # 1 thread: the shipped file is bitwise reproducible at that count
mkdir -p models/default
cp runs/pusht/model.pt models/default/pusht.pt
echo "wrote models/default/pusht.pt"
