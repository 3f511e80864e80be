#!/usr/bin/env bash
# Reproduce the shipped default model (models/default/wall.pt) from scratch:
# collect the wall dataset, train, and copy the best model into place.
# Wall time on the 2-core CPU it was made on: see docs/training.md ("The default wall model").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -f data/wall/meta.json ] || "$PY" -m envs.collect --out data/wall --episodes 2000 --steps 50 --seed 0 --persistent-prob 0.8
"$PY" -m training --config configs/wall.json "$@"
mkdir -p models/default
cp runs/wall/model.pt models/default/wall.pt
echo "wrote models/default/wall.pt"
# The latent subgoal graph for far goals is bound to the model's encoder: rebuild it with the model.
"$PY" -m training.subgoals build --model models/default/wall.pt --dataset data/wall
