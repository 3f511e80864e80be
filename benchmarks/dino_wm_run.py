"""Building a DINO-WM run with DINO-WM's own code, imported at run time from a checkout.

Used by `benchmarks.dino_wm_peer` (whose docstring says what is built and which
few things are supplied to DINO-WM's code here: the local ViT-S/14 for
`torch.hub.load`, the attention mask kept on the CPU, a torchvision Resize
stand-in, the goal latent behind `encode_obs`). Nothing of DINO-WM is copied
into this project: its modules are imported from the checkout while
`dino_wm_imports` is open.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
import yaml

from benchmarks.harness import ROOT
from models import WorldModelConfig
from models.encoders import DinoV2Encoder

DEFAULT_CHECKOUT = ROOT / ".peers" / "dino_wm"
# DINO-WM's top-level modules; `models` and `planning` are also this project's package names.
_THEIR_TOP = ("models", "planning", "utils", "datasets", "env", "preprocessor", "custom_resolvers", "metrics",
              "distributed_fn")
PEER_DEPS = ("einops", "omegaconf", "psutil")  # imported by its vit.py / visual_world_model.py / utils.py

STATS = {"action_mean": [0.0, 0.0], "action_std": [1.0, 1.0], "proprio_mean": [0.0, 0.0, 0.0, 0.0],
         "proprio_std": [1.0, 1.0, 1.0, 1.0],
         "provenance": {"dataset": "seeded synthetic (benchmarks.dino_wm_peer)", "split": "train",
                        "num_episodes": 1, "num_frames": 1}}



@dataclass(frozen=True)
class Sizes:
    """The run's architecture. DINO-WM: img_size 224, ViT-S/14 with 12 blocks,
    predictor depth 6, 16 heads x 64, MLP 2048; emb 10 for actions and proprio."""

    img_size: int = 32
    vit_depth: int = 1
    depth: int = 2
    heads: int = 2
    dim_head: int = 32
    mlp_dim: int = 256
    num_hist: int = 3
    frameskip: int = 5
    raw_action_dim: int = 2
    proprio_dim: int = 4
    emb_dim: int = 10

    def __post_init__(self) -> None:
        if self.img_size % 16:
            raise ValueError(f"img_size={self.img_size}: DINO-WM needs a multiple of 16 (its patch grid is img_size // 16)")
        for name in ("vit_depth", "depth", "heads", "dim_head", "mlp_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")


QUICK_SIZES = Sizes(img_size=32, vit_depth=1, depth=1, heads=2, dim_head=8, mlp_dim=32)


# DINO-WM's code, imported from a checkout ------------------------------------------
def find_checkout(explicit: str | Path | None) -> Path | None:
    """--dino-wm, else $DINO_WM, else .peers/dino_wm; None unless it holds DINO-WM's planner and model."""
    path = Path(explicit or os.environ.get("DINO_WM") or DEFAULT_CHECKOUT)
    ok = (path / "planning" / "cem.py").is_file() and (path / "models" / "visual_world_model.py").is_file()
    return path if ok else None


def missing_deps() -> list[str]:
    return [m for m in PEER_DEPS if importlib.util.find_spec(m) is None]


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """torchvision.transforms with what VWorldModel uses: Compose and Resize(int) on square tensors."""
    class Resize:
        def __init__(self, size: int) -> None:
            self.size = size

        def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, 3, size, size)
            if x.shape[-1] != x.shape[-2]:
                raise ValueError(f"the torchvision stand-in resizes square frames only, got {tuple(x.shape)}")
            return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)

    class Compose:
        def __init__(self, fns: list[Any]) -> None:
            self.fns = fns

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            for fn in self.fns:
                x = fn(x)
            return x

    tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    tr.Resize, tr.Compose = Resize, Compose
    tv.transforms = tr
    return {"torchvision": tv, "torchvision.transforms": tr}


def _torchvision_loads() -> bool:
    try:
        importlib.import_module("torchvision.transforms")
    except (ImportError, RuntimeError, OSError):  # RuntimeError: a CUDA build beside a CPU torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


@contextlib.contextmanager
def dino_wm_imports(checkout: Path) -> Iterator[None]:
    """While open, `import models.vit`, `planning.cem`, ... resolve to DINO-WM's
    modules (and pickling records their true class paths); on exit this
    project's `models` and `planning` are back, DINO-WM's objects keep working."""
    def theirs(name: str) -> bool:
        return name.split(".")[0] in _THEIR_TOP

    ours = {k: sys.modules.pop(k) for k in [k for k in sys.modules if theirs(k)]}
    stand_in = {} if _torchvision_loads() else _torchvision_stand_in()
    sys.modules.update(stand_in)
    sys.path.insert(0, str(checkout))
    try:
        yield
    finally:
        sys.path.remove(str(checkout))
        for k in [k for k in sys.modules if theirs(k)] + list(stand_in):
            sys.modules.pop(k, None)
        sys.modules.update(ours)


class HubViTS14(DinoV2Encoder):
    """What torch.hub.load("facebookresearch/dinov2", "dinov2_vits14") returns, as far
    as DINO-WM uses it (`forward_features(x)["x_norm_patchtokens"]`, `num_features`,
    `patch_size`), with DINOv2's parameter names: a local ViT-S/14, seeded weights."""

    num_features = 384

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x_norm_patchtokens": self(x)}  # (N, P, 384)


def _vit_config(sizes: Sizes) -> WorldModelConfig:
    side = sizes.img_size // 16 * 14  # DINO-WM resizes frames to this before DINOv2
    return WorldModelConfig(name="hub-vits14", encoder="dinov2_vits14", image_size=side, vit_image_size=side,
                            vit_depth=sizes.vit_depth, raw_action_dim=sizes.raw_action_dim,
                            frameskip=sizes.frameskip, proprio_dim=sizes.proprio_dim)


@contextlib.contextmanager
def _mask_on_cpu() -> Iterator[None]:
    """DINO-WM's Attention does `generate_mask_matrix(...).to('cuda')`; without CUDA, keep it on the CPU."""
    if torch.cuda.is_available():
        yield
        return
    to = torch.Tensor.to

    def cpu_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return to(self, *args, **kwargs)

    with mock.patch.object(torch.Tensor, "to", cpu_to):
        yield


def _hydra_yaml(checkout: Path, sizes: Sizes) -> dict[str, Any]:
    """The run's hydra.yaml: DINO-WM's conf/train.yaml keys with its encoder, predictor
    and embedding configs from conf/, at these sizes."""
    conf = checkout / "conf"
    read = lambda p: yaml.safe_load((conf / p).read_text())  # noqa: E731
    predictor = {**read("predictor/vit.yaml"), "depth": sizes.depth, "heads": sizes.heads, "mlp_dim": sizes.mlp_dim,
                 "dim_head": sizes.dim_head}
    return {"img_size": sizes.img_size, "frameskip": sizes.frameskip, "concat_dim": 1, "normalize_action": True,
            "action_emb_dim": sizes.emb_dim, "num_action_repeat": 1, "proprio_emb_dim": sizes.emb_dim,
            "num_proprio_repeat": 1, "num_hist": sizes.num_hist, "num_pred": 1, "has_predictor": True,
            "has_decoder": False,
            "model": {"_target_": "models.visual_world_model.VWorldModel", "image_size": sizes.img_size,
                      "num_hist": sizes.num_hist, "num_pred": 1, "train_encoder": False, "train_predictor": True,
                      "train_decoder": False},
            "encoder": read("encoder/dino.yaml"), "predictor": predictor,
            "action_encoder": read("action_encoder/proprio.yaml"), "proprio_encoder": read("proprio_encoder/proprio.yaml"),
            "env": {"name": "seeded", "dataset": {"data_path": "none (seeded weights, benchmarks.dino_wm_peer)"}}}


@dataclass
class DinoWMRun:
    dir: Path
    encoder_weights: Path
    stats: Path
    wm: Any  # DINO-WM's VWorldModel, eval mode
    cem: types.ModuleType  # its planning.cem
    objectives: types.ModuleType  # its planning.objectives
    preprocessor: types.ModuleType  # its preprocessor


def build_run(checkout: Path, root: Path, sizes: Sizes, seed: int) -> DinoWMRun:
    """A DINO-WM run folder written by DINO-WM's own classes with seeded weights."""
    run = root / "outputs" / "seeded" / f"seed-{seed}"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    hub = HubViTS14(_vit_config(sizes))
    with dino_wm_imports(checkout), contextlib.redirect_stdout(sys.stderr):  # its constructors print
        dino = importlib.import_module("models.dino")
        vit = importlib.import_module("models.vit")
        proprio = importlib.import_module("models.proprio")
        vwm = importlib.import_module("models.visual_world_model")
        cem, objectives = importlib.import_module("planning.cem"), importlib.import_module("planning.objectives")
        preprocessor = importlib.import_module("preprocessor")
        with mock.patch.object(torch.hub, "load", lambda repo, name, *a, **k: hub):
            encoder = dino.DinoV2Encoder(name="dinov2_vits14", feature_key="x_norm_patchtokens")
        encoder.requires_grad_(False)  # train.py: a frozen encoder
        emb = sizes.emb_dim
        action_encoder = proprio.ProprioceptiveEmbedding(num_frames=1, tubelet_size=1, use_3d_pos=False,
                                                         in_chans=sizes.frameskip * sizes.raw_action_dim, emb_dim=emb)
        proprio_encoder = proprio.ProprioceptiveEmbedding(num_frames=1, tubelet_size=1, use_3d_pos=False,
                                                          in_chans=sizes.proprio_dim, emb_dim=emb)
        with _mask_on_cpu():
            predictor = vit.ViTPredictor(num_patches=(sizes.img_size // 16) ** 2, num_frames=sizes.num_hist,
                                         dim=encoder.emb_dim + 2 * emb, depth=sizes.depth, heads=sizes.heads,
                                         mlp_dim=sizes.mlp_dim, dim_head=sizes.dim_head, dropout=0.1, emb_dropout=0,
                                         pool="mean")
        wm = vwm.VWorldModel(image_size=sizes.img_size, num_hist=sizes.num_hist, num_pred=1, encoder=encoder,
                             proprio_encoder=proprio_encoder, action_encoder=action_encoder, decoder=None,
                             predictor=predictor, proprio_dim=emb, action_dim=emb, concat_dim=1,
                             num_action_repeat=1, num_proprio_repeat=1, train_encoder=False, train_predictor=True,
                             train_decoder=False)
        # train.py save_ckpt: `_keys_to_save` for a frozen encoder and no decoder training
        # (its optimisers are accelerate-wrapped there; plain AdamW here: no accelerate needed)
        ckpt = {"epoch": 1, "predictor": predictor,
                "predictor_optimizer": torch.optim.AdamW(predictor.parameters(), lr=5e-4),
                "action_encoder": action_encoder, "proprio_encoder": proprio_encoder}
        torch.save(ckpt, run / "checkpoints" / "model_latest.pth")
    wm.eval()  # VWorldModel.eval returns None
    (run / "hydra.yaml").write_text(yaml.safe_dump(_hydra_yaml(checkout, sizes)))
    enc_path = root / "dinov2_vits14_seeded.pth"
    torch.save(hub.state_dict(), enc_path)  # the hub cache file's layout
    stats = root / "stats.json"
    stats.write_text(json.dumps(STATS))
    return DinoWMRun(run, enc_path, stats, wm, cem, objectives, preprocessor)


class LatentGoalWM:
    """DINO-WM's VWorldModel as its CEMPlanner uses it (`parameters`, `encode_obs`
    for the goal, `rollout`), with the goal's encoding replaced by a latent."""

    def __init__(self, wm: Any) -> None:
        self.wm, self.goal = wm, None

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.wm.parameters()

    def rollout(self, obs_0: dict, act: torch.Tensor) -> Any:
        return self.wm.rollout(obs_0=obs_0, act=act)

    def encode_obs(self, obs: dict) -> dict[str, torch.Tensor]:
        self.wm.encode_obs(obs)  # encoded as DINO-WM would: its cost stays in the timing
        return self.goal


class LossLog:
    """wandb_run: keeps the planner's logged loss per iteration."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def log(self, d: dict[str, Any]) -> None:
        self.losses += [float(v) for k, v in d.items() if k.endswith("/loss")]
