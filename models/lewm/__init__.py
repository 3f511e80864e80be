"""LeWorldModel (Maes, Le Lidec, Scieur, LeCun, Balestriero 2026; `lucas-maes/le-wm`), served here.

    python -m models.lewm weights.pt --config config.json --stats stats.json --out lewm.pt

config.py     the architecture (defaults: the published model)
network.py    the ViT encoder, BatchNorm MLPs, action embedder and AdaLN-zero predictor
model.py      `LeWM`: one latent per frame, behind the planner's world-model interface
flops.py      its FLOP model (admission cost)
checkpoint.py the published formats (`weights.pt` + `config.json`; `<name>_weight.ckpt`) -> weights
importer.py   statistics, config checks and the artifact; the CLI

See docs/lewm_import.md.
"""

from models.lewm.config import LeWMConfig
from models.lewm.model import LeWM

__all__ = ["LeWM", "LeWMConfig"]
