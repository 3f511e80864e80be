"""Import a published LeWorldModel checkpoint as a model artifact this server loads and plans with.

    python -m models.lewm WEIGHTS --config CONFIG --stats STATS --out lewm.pt \
        [--frameskip 5] [--name NAME] [--action-low ... --action-high ...] \
        [--stats-provenance lewm-loader --stats-dataset pusht_expert_train --stats-episodes N
         | train | published --stats-source TEXT] [--planner paper|none]

WEIGHTS is the Hugging Face mirror's `weights.pt` or the Drive archive's
`<name>_weight.ckpt` (`models.lewm.checkpoint`); CONFIG its `config.json`, or
the training run's hydra config. Neither holds the action statistics: le-wm
normalises actions with the z-score of the dataset's action column
(`get_column_normalizer`), computed from the dataset at training time and
again by `eval.py` at evaluation time, so they are passed explicitly (see
docs/lewm_import.md for how to compute them). The artifact records LeWM's
paper planner (CEM, 300 samples, 30 elites, 30 iterations, horizon 5, last-
step objective) as metadata "planner", which `PlannerConfig.for_model` applies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import file_sha256, save_model
from models.lewm.checkpoint import LeWMImportError, read_config, read_state_dict, to_project_names
from models.lewm.config import LeWMConfig
from models.lewm.model import LeWM
from models.stats import NormStats, read_stats_file

log = logging.getLogger(__name__)

# stable-pretraining's `vit_hf` sizes (hidden, layers, heads; MLP 4x hidden)
VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
# le-wm config/eval/solver/cem.yaml (num_samples 300, topk 30, n_steps 30, var_scale 1) and the
# plan_config of every config/eval/<env>.yaml (horizon 5, action_block 5), upstream commit LEWM_COMMIT;
# its cost (`JEPA.criterion`) compares the last predicted step with the goal embedding.
LEWM_REPO, LEWM_COMMIT = "lucas-maes/le-wm", "c8a44170b22dfe15b0b1924e2845da97af926c42"
PAPER_PLANNER: dict[str, Any] = {"method": "cem", "horizon": 5, "max_iterations": 30, "objective": "last",
                                 "alpha": 0.0, "cem": {"samples": 300, "elites": 30, "sigma": 1.0}}
STATS_KEYS = ("action_mean", "action_std")
PROVENANCE_KINDS = {"lewm-loader": "all_loaded", "train": "train", "published": "published"}
LEWM_RULE = ("le-wm get_column_normalizer: mean and std (torch, unbiased) of the dataset's action column over every "
             "row without NaN, all episodes, before the train/val split; eval.py refits the same column with "
             "sklearn's StandardScaler")


# Config ----------------------------------------------------------------------
def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in (cfg.get(name) or {}).items() if not str(k).startswith("_")}


def _given(section: dict[str, Any], key: str, default: Any = None) -> Any:
    value = section.get(key, default)
    return default if value in (None, "???") else value


def build_config(cfg: dict[str, Any], sd: dict[str, torch.Tensor], frameskip: int, name: str,
                 action_low: tuple[float, ...] | None = None,
                 action_high: tuple[float, ...] | None = None) -> LeWMConfig:
    """The project config that rebuilds the checkpoint, from its config and, where the config
    leaves a value open (hydra's `???`), the weights' shapes."""
    enc, pred, act = _section(cfg, "encoder"), _section(cfg, "predictor"), _section(cfg, "action_encoder")
    proj, pproj = _section(cfg, "projector"), _section(cfg, "pred_proj")
    size = _given(enc, "size", "tiny")
    if size not in VIT_SIZES:
        raise LeWMImportError(f"encoder.size={size!r}: expected one of {sorted(VIT_SIZES)} (stable-pretraining vit_hf)")
    # vit_hf passes extra keyword arguments on to Hugging Face's ViTConfig, over the size's values
    vit_dim, vit_depth, vit_heads = (int(_given(enc, key, dflt)) for key, dflt in zip(
        ("hidden_size", "num_hidden_layers", "num_attention_heads"), VIT_SIZES[size]))
    vit_mlp, vit_eps = int(_given(enc, "intermediate_size", 4 * vit_dim)), float(_given(enc, "layer_norm_eps", 1e-12))
    act_fn = _given(enc, "hidden_act", "gelu")
    if act_fn != "gelu":
        raise LeWMImportError(f"encoder.hidden_act={act_fn!r}: only 'gelu' (exact, ViT's default) is supported")
    embed = int(_given(pred, "input_dim", 192))
    for section, key in ((pred, "output_dim"), (act, "emb_dim")):
        if int(_given(section, key, embed)) != embed:
            raise LeWMImportError(f"{key}={section[key]} differs from predictor.input_dim={embed}: the rollout feeds "
                                  "predictions back as inputs, so LeWM needs them equal")
    conv = sd.get("action_encoder.patch_embed.weight")
    action_in = _given(act, "input_dim")
    if action_in is None:  # hydra's `input_dim: ???`, filled from the dataset at training time
        if conv is None:
            raise LeWMImportError("action_encoder.input_dim is not given and the checkpoint has no action embedder")
        action_in = conv.shape[1]
    action_in = int(action_in)
    if conv is not None and conv.shape[1] != action_in:
        raise LeWMImportError(f"action_encoder.input_dim={action_in}, but the checkpoint's action embedder takes "
                              f"{conv.shape[1]} inputs: the config gives a different model")
    if action_in % frameskip:
        raise LeWMImportError(f"the action embedder takes {action_in} inputs, not a multiple of --frameskip "
                              f"{frameskip} (le-wm's action_block); give the frameskip the model was trained with")
    config = LeWMConfig(
        name=name, image_size=int(_given(enc, "image_size", 224)), patch_size=int(_given(enc, "patch_size", 14)),
        vit_dim=vit_dim, vit_depth=vit_depth, vit_heads=vit_heads, vit_mlp_dim=vit_mlp, vit_eps=vit_eps,
        embed_dim=embed,
        projector_hidden=int(_given(proj, "hidden_dim", 2048)), pred_proj_hidden=int(_given(pproj, "hidden_dim", 2048)),
        predictor_dim=int(_given(pred, "hidden_dim", embed)), num_hist=int(_given(pred, "num_frames", 3)),
        depth=int(_given(pred, "depth", 6)), heads=int(_given(pred, "heads", 16)),
        dim_head=int(_given(pred, "dim_head", 64)), mlp_dim=int(_given(pred, "mlp_dim", 2048)),
        action_smoothed_dim=int(_given(act, "smoothed_dim", 10)), action_mlp_scale=int(_given(act, "mlp_scale", 4)),
        raw_action_dim=action_in // frameskip, frameskip=frameskip, action_low=action_low, action_high=action_high)
    for section, key, want in ((proj, "input_dim", vit_dim), (proj, "output_dim", embed),
                               (pproj, "input_dim", embed), (pproj, "output_dim", embed)):
        got = _given(section, key)
        if got is not None and int(got) != want:
            raise LeWMImportError(f"{'projector' if section is proj else 'pred_proj'}.{key}={got}, but the "
                                  f"architecture needs {want} (encoder.size={size!r}, embed {embed})")
    return config


# Statistics ------------------------------------------------------------------
def read_stats(path: str | Path, provenance: dict[str, Any] | None = None) -> NormStats:
    """Action statistics (raw_action_dim values each) from JSON, NPZ or a weights-only torch
    file: {"action_mean": [...], "action_std": [...], "provenance": {...}}. LeWM plans from
    pixels, so proprio statistics, if present, are ignored. `provenance` is for a file without one."""
    path = Path(path)
    try:
        data = read_stats_file(path)
    except ValueError as exc:
        raise LeWMImportError(str(exc)) from None
    if any(k not in data for k in STATS_KEYS):
        raise LeWMImportError(f"{path} must hold {list(STATS_KEYS)} (one value per raw env action dimension) and "
                              "'provenance' (or pass --stats-provenance)")
    unknown = sorted(set(data) - {*STATS_KEYS, "provenance", "proprio_mean", "proprio_std"})
    if unknown:
        raise LeWMImportError(f"{path}: unknown keys {unknown}; expected {list(STATS_KEYS)} and 'provenance'")
    if "provenance" in data and provenance is not None:
        raise LeWMImportError(f"{path} states its own provenance ({data['provenance']}); drop --stats-provenance")
    given = data.get("provenance", provenance)
    if not isinstance(given, dict):
        raise LeWMImportError(
            f"{path} has no 'provenance': say how the statistics were computed with --stats-provenance "
            f"({', '.join(PROVENANCE_KINDS)}), e.g. '--stats-provenance lewm-loader --stats-dataset pusht_expert_train "
            "--stats-episodes N' for le-wm's z-score of the dataset's action column")
    prov = {**given, "stats_file": str(path)}
    if "proprio_mean" in data:
        prov["ignored"] = "proprio statistics (LeWM plans from pixels alone)"
    try:
        return NormStats(*(torch.as_tensor(np.asarray(data[k], dtype=np.float32)) for k in STATS_KEYS),
                         torch.zeros(0), torch.zeros(0), provenance=prov)
    except ValueError as exc:
        raise LeWMImportError(f"{path}: {exc}") from exc


def stats_provenance(kind: str, dataset: str | None, episodes: int | None = None,
                     source: str | None = None) -> dict[str, Any]:
    """Provenance for a statistics file that has none, from what the user declares."""
    if kind not in PROVENANCE_KINDS:
        raise LeWMImportError(f"--stats-provenance {kind!r}: expected one of {list(PROVENANCE_KINDS)}")
    if not dataset:
        raise LeWMImportError("--stats-dataset is required with --stats-provenance: the dataset the statistics were "
                              "computed over (e.g. pusht_expert_train)")
    prov: dict[str, Any] = {"dataset": dataset, "split": PROVENANCE_KINDS[kind], "declared_by": "importer flag"}
    if kind == "lewm-loader":
        if episodes is None:
            raise LeWMImportError("--stats-provenance lewm-loader needs --stats-episodes N: the episodes in the dataset")
        prov.update(num_episodes=int(episodes), rule=LEWM_RULE)
    elif kind == "published":
        if not source:
            raise LeWMImportError("--stats-provenance published needs --stats-source: where the constants are published")
        prov["source"] = source
    elif episodes is not None:
        prov["num_episodes"] = int(episodes)
    return prov


# Import ----------------------------------------------------------------------
def load_weights(model: LeWM, weights: dict[str, torch.Tensor], origin: dict[str, str], config_path: Path) -> None:
    """Strict load; a mismatch names the checkpoint's parameter and both shapes (a config that does not fit).
    origin: this project's parameter name -> the checkpoint's (`to_project_names`)."""
    own = model.state_dict()
    wrong = [f"{origin.get(k, k)}: config gives {tuple(own[k].shape)}, checkpoint has {tuple(v.shape)}"
             for k, v in weights.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(origin.get(k, k) for k in set(weights) - set(own))
    problems = wrong[:6]
    if missing:
        problems.append(f"the config asks for parameters the checkpoint lacks (this project's names): {missing[:6]}")
    if unexpected:
        problems.append(f"the checkpoint has parameters the config does not: {unexpected[:6]}")
    if problems:
        raise LeWMImportError(f"{config_path} does not describe these weights: {'; '.join(problems)}. "
                              "Is the config from the same run as the checkpoint?")
    model.load_state_dict(weights)


def import_checkpoint(weights_path: str | Path, config_path: str | Path, stats: NormStats, out: str | Path,
                      frameskip: int = 5, name: str | None = None, action_low: tuple[float, ...] | None = None,
                      action_high: tuple[float, ...] | None = None, planner: str = "paper") -> LeWM:
    """Convert a published LeWM checkpoint into a model artifact at `out`; returns the eval-mode model.

    stats: the action statistics it was trained with (`read_stats`); no default, since planning
    with other statistics plans in a shifted action space. planner: "paper" records LeWM's
    paper planner as the model's recommendation, "none" records none."""
    if planner not in ("paper", "none"):
        raise LeWMImportError(f"planner={planner!r}: expected 'paper' or 'none'")
    if not isinstance(stats, NormStats):
        raise LeWMImportError("statistics are required (NormStats from read_stats); refusing to write a model "
                              "without the action mean and std it was trained with")
    weights_path, config_path = Path(weights_path), Path(config_path)
    cfg = read_config(config_path)
    sd = read_state_dict(weights_path)
    config = build_config(cfg, sd, frameskip, name or f"lewm-{weights_path.resolve().parent.name}",
                          action_low, action_high)
    if stats.action_mean.numel() != config.raw_action_dim:
        raise LeWMImportError(f"the statistics have {stats.action_mean.numel()} action dims; the checkpoint's "
                              f"actions have {config.raw_action_dim} per env step ({config.action_dim} per model step "
                              f"/ frameskip {frameskip})")
    model = LeWM(config, stats)
    load_weights(model, *to_project_names(sd), config_path)
    model = model.eval().requires_grad_(False)
    metadata: dict[str, Any] = {
        "source": "lewm", "checkpoint": str(weights_path.resolve()), "checkpoint_sha256": file_sha256(weights_path),
        "config": str(config_path.resolve()), "config_sha256": file_sha256(config_path),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if planner == "paper":
        metadata.update(planner=PAPER_PLANNER, planner_source={
            "repo": LEWM_REPO, "commit": LEWM_COMMIT,
            "files": ["config/eval/solver/cem.yaml", "config/eval/pusht.yaml (plan_config)", "jepa.py (criterion)"],
            "note": "le-wm's CEM runs all 30 iterations; this server's early stopping may end sooner"})
    model.metadata = json.loads(json.dumps(metadata))
    save_model(model, out, metadata=model.metadata)
    log.info("imported %s (%s, %d parameters) -> %s", weights_path, config.name, model.num_parameters(), out)
    return model


def _floats(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(float(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.lewm", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help="weights.pt (Hugging Face mirror) or <name>_weight.ckpt (Drive archive)")
    p.add_argument("--config", type=Path, required=True, help="config.json beside weights.pt, or the run's hydra config")
    p.add_argument("--stats", type=Path, required=True,
                   help="JSON, NPZ or .pt with action_mean and action_std (one value per raw env action dimension)")
    p.add_argument("--stats-provenance", choices=list(PROVENANCE_KINDS),
                   help="for a file that does not say: lewm-loader (le-wm's z-score of the dataset's action column), "
                        "train (the training split only), published (constants published with the dataset)")
    p.add_argument("--stats-dataset", help="with --stats-provenance: the dataset, e.g. pusht_expert_train")
    p.add_argument("--stats-episodes", type=int, help="with lewm-loader: episodes in that dataset")
    p.add_argument("--stats-source", help="with published: where the constants are published")
    p.add_argument("--out", type=Path, required=True, help="artifact to write (.pt)")
    p.add_argument("--frameskip", type=int, default=5, help="env steps per model step (le-wm's action_block; 5)")
    p.add_argument("--name", help="model name reported by the server (default: lewm-<folder>)")
    p.add_argument("--action-low", help="raw action lower bounds, comma-separated (the planner clamps to them)")
    p.add_argument("--action-high", help="raw action upper bounds, comma-separated")
    p.add_argument("--planner", choices=("paper", "none"), default="paper",
                   help="record LeWM's paper planner (CEM 300/30, 30 iterations, horizon 5) as the recommendation")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        provenance = None
        if args.stats_provenance is not None:
            provenance = stats_provenance(args.stats_provenance, args.stats_dataset, args.stats_episodes,
                                          args.stats_source)
        stats = read_stats(args.stats, provenance)
        import_checkpoint(args.weights, args.config, stats, args.out, args.frameskip, args.name,
                          _floats(args.action_low), _floats(args.action_high), args.planner)
    except (LeWMImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
