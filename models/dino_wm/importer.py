"""Import a DINO-WM training run as a model artifact this server loads and plans with.

    python -m models.dino_wm RUN_DIR --encoder-weights dinov2_vits14_pretrain.pth \
        --stats stats.json --out model.pt [--name NAME] [--checkpoint model_40.pth] \
        [--stats-provenance dino-wm-loader --stats-episodes N | published --stats-source TEXT | train] \
        [--planner auto|wall|pusht|point_maze|default|none]

A DINO-WM run folder (`outputs/<date>/<time>/`) holds `hydra.yaml` (the
resolved training config) and `checkpoints/model_latest.pth` (whole pickled
modules, read here by `models.dino_wm.checkpoint` without running any code).
It holds neither the frozen DINOv2 encoder (rebuilt from torch hub; pass the
hub's `dinov2_vits14_pretrain.pth`) nor the action/proprio statistics (they
come from the dataset; pass them explicitly, see docs/dino_wm_import.md).
A statistics file written by `python -m training.stats` carries its
provenance; a bare DINO-WM-style file (the loader's `action_mean`,
`action_std`, `proprio_mean`, `proprio_std`) gets it from `--stats-provenance`.
The artifact also records the planner settings DINO-WM evaluated the
environment with (`models.dino_wm.published`: objective, alpha, horizon), as
metadata "planner", which `PlannerConfig.for_model` applies, with the solver
and budget measured to reach DINO-WM's planner's objective for less
(`MEASURED_BUDGET`; `--budget published` keeps DINO-WM's CEM budget).

Name mapping (DINO-WM -> this project), from DINO-WM's `models/vit.py` and
`models/proprio.py`:

    pos_embedding                              predictor.pos_embedding
    transformer.layers.i.0.norm / to_qkv       predictor.blocks.i.attn.norm / to_qkv
    transformer.layers.i.0.to_out.0            predictor.blocks.i.attn.to_out
    transformer.layers.i.1.net.0 / .1 / .4     predictor.blocks.i.ff.norm / fc1 / fc2
    transformer.norm                           predictor.norm
    action_encoder.patch_embed (Conv1d, k=1)   action_encoder (Linear: weight[:, :, 0])
    proprio_encoder.patch_embed                proprio_encoder
    DINOv2 hub state dict                      encoder.* (same names)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from models.artifact import file_sha256, save_model
from models.config import WorldModelConfig
from models.dino_wm.checkpoint import (CheckpointError, PickledObject, children, class_path, load_checkpoint,
                                       module_state, state_dict)
from models.dino_wm.published import PLANNER_SETTINGS, planner_settings
from models.dino_wm.stats import (PROVENANCE_KINDS, DinoWMImportError, check_stats, read_stats,
                                  stats_provenance)
from models.dino_wm.stats import cfg_value as _cfg
from models.predictor import frame_causal_mask
from models.stats import NormStats
from models.world_model import WorldModel

log = logging.getLogger(__name__)

# DINO-WM sizes its patch grid from the VQ-VAE decoder's 16x downsampling
# (`train.py`: num_side_patches = img_size // 16) and resizes frames to
# num_side_patches * patch_size before DINOv2 (224 px -> 196 px).
DECODER_SCALE = 16
VITS14 = {"vit_dim": 384, "vit_heads": 6, "vit_patch_size": 14}
PLANNER_CHOICES = ("auto", *PLANNER_SETTINGS, "none")
# The solver and budget an imported run is served with by default (`--budget measured`), over DINO-WM's
# published objective and horizon: chosen by `benchmarks.dino_wm_peer --grid decide` (docs/benchmarks.md,
# "Defaults chosen by measurement") as the cheapest planner that reached the objective of DINO-WM's own
# CEMPlanner at its settings, on runs written by DINO-WM's code at two sizes, and that held the paper CEM's
# closed-loop success on the shipped wall model (pure gradient steps did not). A few CEM iterations explore,
# then Adam steps refine their plan; the schedule is fixed (no early stop), so the gradient phase always runs.
MEASURED_BUDGET: dict[str, Any] = {
    "method": "cem_gradient", "max_iterations": 33, "min_iterations": 33,
    "cem": {"samples": 50, "elites": 5}, "cem_gradient": {"gradient_iterations": 30},
    "gradient": {"starts": 1, "lr": 0.3}}
BUDGETS = ("measured", "published")


# Run folder ------------------------------------------------------------------
def read_run_config(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """The resolved training config: `hydra.yaml` (written by DINO-WM's trainer)
    or hydra's own `.hydra/config.yaml`."""
    for rel in ("hydra.yaml", ".hydra/config.yaml"):
        path = run_dir / rel
        if path.is_file():
            with path.open() as f:
                cfg = yaml.safe_load(f)
            if not isinstance(cfg, dict):
                raise DinoWMImportError(f"{path} is not a YAML mapping")
            return cfg, path
    raise DinoWMImportError(f"{run_dir} has no hydra.yaml (nor .hydra/config.yaml): is it a DINO-WM run folder?")


def _checkpoint_path(run_dir: Path, checkpoint: str | None) -> Path:
    if checkpoint is None:
        return run_dir / "checkpoints" / "model_latest.pth"
    path = Path(checkpoint)
    return path if path.is_absolute() or path.exists() else run_dir / "checkpoints" / checkpoint


# Stand-in modules -> weights -------------------------------------------------
def _expect(obj: Any, path: str, what: str) -> PickledObject:
    if class_path(obj) != path:
        raise DinoWMImportError(f"{what} is {class_path(obj)}; expected {path}")
    return obj


def _linear(obj: Any, what: str, bias: bool = True) -> dict[str, torch.Tensor]:
    sd = state_dict(_expect(obj, "torch.nn.modules.linear.Linear", what), what)
    if ("bias" in sd) != bias:
        raise DinoWMImportError(f"{what}: expected a Linear {'with' if bias else 'without'} bias")
    return sd


def _layer_norm(obj: Any, what: str) -> dict[str, torch.Tensor]:
    st = module_state(_expect(obj, "torch.nn.modules.normalization.LayerNorm", what), what)
    if st.get("eps") != 1e-5 or not st.get("elementwise_affine", True):
        raise DinoWMImportError(f"{what}: LayerNorm eps={st.get('eps')}, affine={st.get('elementwise_affine')}; "
                                "the predictor uses torch's default (eps=1e-5, affine)")
    return state_dict(obj, what)


def _attention(attn: Any, what: str, dim: int) -> tuple[dict[str, torch.Tensor], int, int, torch.Tensor | None]:
    """DINO-WM `Attention` -> (weights in this project's names, heads, dim_head, causal mask or None)."""
    st = module_state(_expect(attn, "models.vit.Attention", what), what)
    kids = children(attn, what)
    qkv = _linear(kids["to_qkv"], f"{what}.to_qkv", bias=False)["weight"]  # (3*inner, dim)
    heads, inner = int(st["heads"]), qkv.shape[0] // 3
    if inner % heads:
        raise DinoWMImportError(f"{what}: to_qkv width {inner} is not a multiple of heads={heads}")
    dim_head = inner // heads
    if not math.isclose(float(st["scale"]), dim_head ** -0.5, rel_tol=1e-6):
        raise DinoWMImportError(f"{what}: attention scale {st['scale']} is not dim_head**-0.5 ({dim_head}**-0.5)")
    out = kids["to_out"]
    if class_path(out) == "torch.nn.modules.linear.Identity":
        # DINO-WM drops the output projection when heads == 1 and dim_head == dim;
        # an identity Linear reproduces it exactly.
        to_out = {"weight": torch.eye(dim), "bias": torch.zeros(dim)}
    else:
        to_out = _linear(children(_expect(out, "torch.nn.modules.container.Sequential", f"{what}.to_out"),
                                  f"{what}.to_out")["0"], f"{what}.to_out.0")
    # The frame-causal mask: a plain tensor attribute (published code) or a buffer (some forks).
    mask = st.get("bias") if isinstance(st.get("bias"), torch.Tensor) else st.get("_buffers", {}).get("bias")
    weights = {"norm." + k: v for k, v in _layer_norm(kids["norm"], f"{what}.norm").items()}
    weights.update({"to_qkv.weight": qkv, **{"to_out." + k: v for k, v in to_out.items()}})
    return weights, heads, dim_head, mask


def _feed_forward(ff: Any, what: str) -> tuple[dict[str, torch.Tensor], int]:
    """DINO-WM `FeedForward` (net = LayerNorm, Linear, GELU, Dropout, Linear, Dropout) -> (weights, mlp_dim)."""
    net = children(_expect(children(_expect(ff, "models.vit.FeedForward", what), what)["net"],
                           "torch.nn.modules.container.Sequential", f"{what}.net"), f"{what}.net")
    kinds = [class_path(m).rsplit(".", 1)[-1] for m in net.values()]
    if kinds != ["LayerNorm", "Linear", "GELU", "Dropout", "Linear", "Dropout"]:
        raise DinoWMImportError(f"{what}.net is {kinds}; expected DINO-WM's "
                                "[LayerNorm, Linear, GELU, Dropout, Linear, Dropout]")
    if module_state(net["2"], f"{what}.net.2").get("approximate", "none") != "none":
        raise DinoWMImportError(f"{what}: tanh-approximate GELU; the predictor uses the exact GELU")
    fc1, fc2 = _linear(net["1"], f"{what}.net.1"), _linear(net["4"], f"{what}.net.4")
    weights = {"norm." + k: v for k, v in _layer_norm(net["0"], f"{what}.net.0").items()}
    weights.update({**{"fc1." + k: v for k, v in fc1.items()}, **{"fc2." + k: v for k, v in fc2.items()}})
    return weights, fc1["weight"].shape[0]


def predictor_weights(predictor: Any, num_hist: int, tokens_per_frame: int
                      ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """DINO-WM `ViTPredictor` -> (this project's `predictor.*` weights, its architecture).

    tokens_per_frame: what hydra.yaml implies (patches, plus 2 in token mode).
    """
    what = "checkpoint['predictor']"
    st = module_state(_expect(predictor, "models.vit.ViTPredictor", what), what)
    pos = st["_parameters"]["pos_embedding"].detach()  # (1, num_frames * tokens_per_frame, dim)
    dim = pos.shape[-1]
    if pos.shape[1] != num_hist * tokens_per_frame:
        raise DinoWMImportError(
            f"{what}.pos_embedding covers {pos.shape[1]} tokens, but hydra.yaml implies num_hist={num_hist} "
            f"frames of {tokens_per_frame} tokens: is the checkpoint from this run folder?")
    transformer = _expect(children(predictor, what)["transformer"], "models.vit.Transformer", f"{what}.transformer")
    t_kids = children(transformer, f"{what}.transformer")
    weights = {"predictor.pos_embedding": pos}
    final_norm = _layer_norm(t_kids["norm"], f"{what}.transformer.norm")
    weights.update({"predictor.norm." + k: v for k, v in final_norm.items()})
    arch: dict[str, int] = {}
    layers = children(t_kids["layers"], f"{what}.transformer.layers")
    for i, layer in enumerate(layers.values()):
        lw = f"{what}.transformer.layers.{i}"
        pair = list(children(layer, lw).values())
        if len(pair) != 2:
            raise DinoWMImportError(f"{lw} has {len(pair)} modules; expected [Attention, FeedForward]")
        attn, heads, dim_head, mask = _attention(pair[0], f"{lw}.0", dim)
        ff, mlp_dim = _feed_forward(pair[1], f"{lw}.1")
        if mask is not None:
            want = frame_causal_mask(num_hist, tokens_per_frame)
            if mask.shape[-2:] != want.shape or not torch.equal(mask.reshape(want.shape) != 0, want):
                raise DinoWMImportError(f"{lw}.0's attention mask is not the frame-causal mask of {num_hist} "
                                        f"frames x {tokens_per_frame} tokens; the predictor would differ")
        layer_arch = {"heads": heads, "dim_head": dim_head, "mlp_dim": mlp_dim}
        if arch and layer_arch != arch:
            raise DinoWMImportError(f"{lw} has {layer_arch}, layer 0 has {arch}: mixed layers are not supported")
        arch = layer_arch
        weights.update({f"predictor.blocks.{i}.attn.{k}": v for k, v in attn.items()})
        weights.update({f"predictor.blocks.{i}.ff.{k}": v for k, v in ff.items()})
    if not layers:
        raise DinoWMImportError(f"{what} has no transformer layers")
    return weights, {**arch, "depth": len(layers), "dim": dim, "tokens_per_frame": tokens_per_frame}


def embedding_weights(embedding: Any, what: str) -> dict[str, torch.Tensor]:
    """DINO-WM `ProprioceptiveEmbedding` (Conv1d with kernel 1 over time) -> Linear weights."""
    kids = children(_expect(embedding, "models.proprio.ProprioceptiveEmbedding", what), what)
    sd = state_dict(_expect(kids["patch_embed"], "torch.nn.modules.conv.Conv1d", f"{what}.patch_embed"), what)
    w = sd["weight"]  # (emb_dim, in_chans, tubelet_size)
    if w.shape[-1] != 1:
        raise DinoWMImportError(f"{what}: Conv1d kernel {w.shape[-1]} (tubelet_size); only 1, a per-step "
                                "linear map, is supported")
    return {"weight": w[:, :, 0].contiguous(), "bias": sd["bias"]}


def encoder_weights(ckpt: dict[str, Any], weights_path: Path | None) -> tuple[dict[str, torch.Tensor], str]:
    """DINOv2 weights from the hub file, or from the checkpoint when the run fine-tuned its encoder."""
    if "encoder" in ckpt:
        if weights_path is not None:
            raise DinoWMImportError(
                "this run trained its encoder (checkpoint['encoder'] exists), so its DINOv2 weights come from the "
                "checkpoint; --encoder-weights would replace them with the pretrained ones: drop it")
        enc = _expect(ckpt["encoder"], "models.dino.DinoV2Encoder", "checkpoint['encoder']")
        key = module_state(enc, "checkpoint['encoder']").get("feature_key", "x_norm_patchtokens")
        if key != "x_norm_patchtokens":
            raise DinoWMImportError(f"the encoder returns {key!r}; only patch tokens (x_norm_patchtokens) "
                                    "are supported")
        base = children(enc, "checkpoint['encoder']")["base_model"]
        return state_dict(base, "checkpoint['encoder'].base_model"), "checkpoint['encoder']"
    if weights_path is None:
        raise DinoWMImportError("the checkpoint holds no encoder (DINO-WM rebuilds the frozen DINOv2 from torch hub); "
                                "pass the hub's weights with --encoder-weights .../dinov2_vits14_pretrain.pth")
    try:
        sd = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a weights-only state dict"
        raise DinoWMImportError(f"{weights_path} could not be read as a weights-only state dict: {exc}") from exc
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DinoWMImportError(f"{weights_path} is not a state dict of tensors (expected dinov2_vits14_pretrain.pth)")
    return dict(sd), str(weights_path)


def _encoder_geometry(sd: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    if "register_tokens" in sd:
        raise DinoWMImportError(f"{source} is a DINOv2 with register tokens; only dinov2_vits14 is supported")
    missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight") if k not in sd]
    if missing:
        raise DinoWMImportError(f"{source} lacks {missing}: not a DINOv2 state dict")
    dim, patch = sd["cls_token"].shape[-1], sd["patch_embed.proj.weight"].shape[-1]
    if (dim, patch) != (VITS14["vit_dim"], VITS14["vit_patch_size"]):
        raise DinoWMImportError(f"{source} has width {dim} and patch {patch}; dinov2_vits14 has 384 and 14")
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    return {**VITS14, "vit_depth": depth, "vit_pos_grid": grid}


# Config ----------------------------------------------------------------------
def build_config(cfg: dict[str, Any], pred_arch: dict[str, int], action_w: torch.Tensor, proprio_w: torch.Tensor,
                 geometry: dict[str, int], name: str) -> WorldModelConfig:
    """The project config that reproduces the run, from hydra.yaml and the weights' shapes
    (shapes win; hydra.yaml values are cross-checked so a mismatched folder is caught)."""
    encoder = _cfg(cfg, "encoder.name", "dinov2_vits14")
    if encoder != "dinov2_vits14":
        raise DinoWMImportError(f"encoder {encoder!r}: only dinov2_vits14 is supported")
    if _cfg(cfg, "encoder.feature_key", "x_norm_patchtokens") != "x_norm_patchtokens":
        raise DinoWMImportError(f"encoder.feature_key={_cfg(cfg, 'encoder.feature_key')!r}: only patch tokens "
                                "(x_norm_patchtokens) are supported")
    for key in ("num_action_repeat", "num_proprio_repeat"):
        if _cfg(cfg, key, 1) != 1:
            raise DinoWMImportError(f"{key}={_cfg(cfg, key)}: only 1 (DINO-WM's default) is supported")
    if _cfg(cfg, "num_pred", 1) != 1:
        raise DinoWMImportError(f"num_pred={_cfg(cfg, 'num_pred')}: DINO-WM only supports 1")
    concat_dim = _cfg(cfg, "concat_dim")
    if concat_dim not in (0, 1):
        raise DinoWMImportError(f"concat_dim={concat_dim!r}: expected 0 or 1")
    img_size, frameskip, num_hist = int(_cfg(cfg, "img_size")), int(_cfg(cfg, "frameskip")), int(_cfg(cfg, "num_hist"))
    side = img_size // DECODER_SCALE
    emb_a, in_a = action_w.shape
    emb_p, proprio_dim = proprio_w.shape
    if proprio_dim == 0:
        raise DinoWMImportError("the run has no proprio (in_chans=0); such models are not supported")
    if in_a % frameskip:
        raise DinoWMImportError(f"the action encoder takes {in_a} inputs, not a multiple of frameskip={frameskip}")
    for key, got in (("action_emb_dim", emb_a), ("proprio_emb_dim", emb_p), ("predictor.depth", pred_arch["depth"]),
                     ("predictor.heads", pred_arch["heads"]), ("predictor.mlp_dim", pred_arch["mlp_dim"]),
                     ("predictor.dim_head", pred_arch["dim_head"])):
        want = _cfg(cfg, key, None)
        if want is not None and int(want) != got:
            raise DinoWMImportError(f"hydra.yaml says {key}={want} but the checkpoint's weights have {got}: "
                                    "is the checkpoint from this run folder?")
    config = WorldModelConfig(
        name=name, image_size=img_size, encoder="dinov2_vits14", vit_image_size=side * geometry["vit_patch_size"],
        **geometry, raw_action_dim=in_a // frameskip, frameskip=frameskip, proprio_dim=proprio_dim,
        action_emb_dim=emb_a, proprio_emb_dim=emb_p, concat_mode="feature" if concat_dim == 1 else "token",
        num_hist=num_hist, depth=pred_arch["depth"], heads=pred_arch["heads"], dim_head=pred_arch["dim_head"],
        mlp_dim=pred_arch["mlp_dim"], dropout=0.0)
    if (config.tokens_per_frame, config.token_dim) != (pred_arch["tokens_per_frame"], pred_arch["dim"]):
        raise DinoWMImportError(
            f"the predictor was built for {pred_arch['tokens_per_frame']} tokens of width {pred_arch['dim']} per "
            f"frame; img_size={img_size}, concat_dim={concat_dim} and the embeddings give "
            f"{config.tokens_per_frame} tokens of width {config.token_dim}")
    return config


# Import ----------------------------------------------------------------------
def import_run(run_dir: str | Path, stats: NormStats, out: str | Path, encoder_weights_path: str | Path | None = None,
               name: str | None = None, checkpoint: str | None = None, planner: str = "auto",
               budget: str = "measured") -> WorldModel:
    """Convert a DINO-WM run into a model artifact at `out`; returns the eval-mode model written.

    stats: the action/proprio statistics the run trained with (`read_stats`);
    there is no default, because planning with other statistics plans in a
    shifted action space.
    planner: whose published planner settings to recommend (metadata
    "planner"): "auto" (hydra.yaml's env.name, else DINO-WM's general
    default), an environment of `PLANNER_SETTINGS`, "default", or "none".
    budget: "measured" (default): DINO-WM's objective and horizon with the solver and budget this project
    measured to reach its planner's objective for less (`MEASURED_BUDGET`); "published": DINO-WM's own
    CEM budget as well.
    """
    if planner not in PLANNER_CHOICES:
        raise DinoWMImportError(f"planner={planner!r}: expected one of {PLANNER_CHOICES}")
    if budget not in BUDGETS:
        raise DinoWMImportError(f"budget={budget!r}: expected one of {BUDGETS}")
    if not isinstance(stats, NormStats):
        raise DinoWMImportError("statistics are required (NormStats from read_stats); refusing to write a model "
                                "without the action/proprio mean and std it was trained with")
    run_dir = Path(run_dir)
    cfg, cfg_path = read_run_config(run_dir)
    check_stats(stats, cfg)
    ckpt_path = _checkpoint_path(run_dir, checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    for key in ("predictor", "action_encoder", "proprio_encoder"):
        if key not in ckpt:
            raise DinoWMImportError(f"{ckpt_path} has no {key!r} (keys: {sorted(ckpt)}); was the predictor trained?")
    num_hist = int(_cfg(cfg, "num_hist"))
    patches = (int(_cfg(cfg, "img_size")) // DECODER_SCALE) ** 2
    pred_w, pred_arch = predictor_weights(ckpt["predictor"], num_hist,
                                          patches + (2 if _cfg(cfg, "concat_dim") == 0 else 0))
    act = embedding_weights(ckpt["action_encoder"], "checkpoint['action_encoder']")
    prop = embedding_weights(ckpt["proprio_encoder"], "checkpoint['proprio_encoder']")
    enc_sd, enc_source = encoder_weights(ckpt, Path(encoder_weights_path) if encoder_weights_path else None)
    name = name or f"dino-wm-{run_dir.resolve().parent.name}-{run_dir.resolve().name}"
    config = build_config(cfg, pred_arch, act["weight"], prop["weight"], _encoder_geometry(enc_sd, enc_source), name)

    try:
        model = WorldModel(config, stats)
    except ValueError as exc:  # statistics sized for another model
        raise DinoWMImportError(f"the statistics do not fit this run: {exc}") from exc
    weights = {**pred_w, **{"encoder." + k: v for k, v in enc_sd.items()},
               **{"action_encoder." + k: v for k, v in act.items()},
               **{"proprio_encoder." + k: v for k, v in prop.items()}}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise DinoWMImportError(f"weights do not fit the model: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise DinoWMImportError(f"weights do not fit the model: missing {result.missing_keys}, "
                                f"unexpected {result.unexpected_keys}")
    model = model.eval().requires_grad_(False)
    metadata = {
        "source": "dino_wm", "run_dir": str(run_dir.resolve()), "run_config": str(cfg_path),
        "checkpoint": str(ckpt_path.resolve()), "checkpoint_sha256": file_sha256(ckpt_path),
        "epoch": ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None,
        "encoder_weights": enc_source,
        "encoder_weights_sha256": file_sha256(Path(enc_source)) if Path(enc_source).is_file() else None,
        "training": {k: _cfg(cfg, k, None) for k in ("img_size", "frameskip", "num_hist", "concat_dim",
                                                      "normalize_action", "action_emb_dim", "proprio_emb_dim")},
        "dataset": _cfg(cfg, "env.dataset", None),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if planner != "none":
        settings, source = planner_settings(_cfg(cfg, "env.name", None) if planner == "auto" else planner)
        if budget == "measured":
            settings = {k: v for k, v in settings.items() if k in ("objective", "alpha", "base", "horizon")}
            settings.update(json.loads(json.dumps(MEASURED_BUDGET)))
            source = {**source, "budget": "measured: benchmarks.dino_wm_peer (docs/benchmarks.md)"}
        metadata.update(planner=settings, planner_source=source)
    model.metadata = json.loads(json.dumps(metadata, default=str))  # as load_model will read it back
    save_model(model, out, metadata=model.metadata)
    log.info("imported %s (%s, epoch %s) -> %s", run_dir, config.name, metadata["epoch"], out)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.dino_wm", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="DINO-WM run folder (holds hydra.yaml and checkpoints/)")
    p.add_argument("--stats", type=Path, required=True,
                   help="JSON, NPZ or .pt with action_mean/std and proprio_mean/std (e.g. from python -m training.stats)")
    p.add_argument("--stats-provenance", choices=list(PROVENANCE_KINDS),
                   help="how the statistics were computed, for a file that does not say: dino-wm-loader (DINO-WM's "
                        "wall/point-maze loader, over all loaded rollouts), published (the dataset's constants), "
                        "train (the training split only)")
    p.add_argument("--stats-episodes", type=int, help="rollouts the statistics were computed over")
    p.add_argument("--stats-source", help="with 'published': where the constants are published")
    p.add_argument("--out", type=Path, required=True, help="artifact to write (.pt)")
    p.add_argument("--encoder-weights", type=Path,
                   help="DINOv2 hub weights (dinov2_vits14_pretrain.pth); not needed if the run trained its encoder")
    p.add_argument("--name", help="model name reported by the server (default: dino-wm-<date>-<time>)")
    p.add_argument("--checkpoint", help="checkpoint file in RUN_DIR/checkpoints or a path (default: model_latest.pth)")
    p.add_argument("--planner", choices=PLANNER_CHOICES, default="auto",
                   help="recommend DINO-WM's published planner settings of this environment (auto: hydra.yaml's "
                        "env.name; default: DINO-WM's general default; none: record none)")
    p.add_argument("--budget", choices=BUDGETS, default="measured",
                   help="measured: serve with the solver and budget measured to reach DINO-WM's planner's objective "
                        "for less (CEM then gradient steps); published: DINO-WM's own CEM budget")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        provenance = None
        if args.stats_provenance is not None:
            cfg, _ = read_run_config(args.run_dir)
            provenance = stats_provenance(args.stats_provenance, cfg, args.stats_episodes, args.stats_source)
        stats = read_stats(args.stats, provenance)
        import_run(args.run_dir, stats, args.out, args.encoder_weights, args.name, args.checkpoint, args.planner,
                   args.budget)
    except (DinoWMImportError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0

