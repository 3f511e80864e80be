"""LeWM's published checkpoint formats, read without running any of their code.

* The Hugging Face mirror (`quentinll/lewm-<env>`): `weights.pt`, the `JEPA`
  module's `state_dict()`, beside `config.json`, the constructor arguments of
  its parts: `encoder` {size, patch_size, image_size}, `predictor`
  (`ARPredictor`'s), `action_encoder` (`Embedder`'s), `projector` and
  `pred_proj` (`MLP`'s: input_dim, hidden_dim, output_dim).
* The Drive archive: `<name>_weight.ckpt`, the same `state_dict()`, beside
  `<name>_object.ckpt` (the whole pickled module, which is refused here). Its
  config is the same `config.json` shape or the training run's hydra config
  (`config/train/lewm.yaml` with its `model:` section).

Both are read with `torch.load(weights_only=True)`; nothing is unpickled.
`to_project_names` renames the state dict onto `models.lewm.network`:

    encoder.embeddings.cls_token / position_embeddings      encoder.cls_token / pos_embed
    encoder.embeddings.patch_embeddings.projection          encoder.patch_embed
    encoder.encoder.layer.i.attention.attention.{query,key,value}   encoder.blocks.i.{q,k,v}
    encoder.encoder.layer.i.attention.output.dense          encoder.blocks.i.out
    encoder.encoder.layer.i.{intermediate,output}.dense     encoder.blocks.i.{fc1,fc2}
    encoder.encoder.layer.i.layernorm_{before,after}        encoder.blocks.i.norm{1,2}
    encoder.layernorm                                       encoder.norm
    predictor.transformer.layers.i.attn.{norm,to_qkv,to_out.0}   predictor.blocks.i.{attn_norm,to_qkv,to_out}
    predictor.transformer.layers.i.mlp.net.{0,1,4}          predictor.blocks.i.{mlp_norm,fc1,fc2}
    predictor.transformer.layers.i.adaLN_modulation.1       predictor.blocks.i.adaln
    predictor.transformer.{norm,input_proj,cond_proj,output_proj}   predictor.{...}
    action_encoder.patch_embed (Conv1d, kernel 1)           action_encoder.smooth (Linear: weight[:, :, 0])
    action_encoder.embed.{0,2}                              action_encoder.{fc1,fc2}
    projector.net.{0,1,3} / pred_proj.net.{0,1,3}           projector / pred_proj.{fc1,norm,fc2}
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml


class LeWMImportError(ValueError):
    """The checkpoint cannot be imported faithfully; the message says what and why."""


_RENAMES: tuple[tuple[str, str], ...] = (
    (r"encoder\.embeddings\.cls_token", "encoder.cls_token"),
    (r"encoder\.embeddings\.position_embeddings", "encoder.pos_embed"),
    (r"encoder\.embeddings\.patch_embeddings\.projection\.", "encoder.patch_embed."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"encoder.blocks.\1.q."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"encoder.blocks.\1.k."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"encoder.blocks.\1.v."),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.blocks.\1.out."),
    (r"encoder\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.blocks.\1.fc1."),
    (r"encoder\.encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.blocks.\1.fc2."),
    (r"encoder\.encoder\.layer\.(\d+)\.layernorm_before\.", r"encoder.blocks.\1.norm1."),
    (r"encoder\.encoder\.layer\.(\d+)\.layernorm_after\.", r"encoder.blocks.\1.norm2."),
    (r"encoder\.layernorm\.", "encoder.norm."),
    (r"predictor\.pos_embedding", "predictor.pos_embedding"),
    (r"predictor\.transformer\.layers\.(\d+)\.attn\.norm\.", r"predictor.blocks.\1.attn_norm."),
    (r"predictor\.transformer\.layers\.(\d+)\.attn\.to_qkv\.", r"predictor.blocks.\1.to_qkv."),
    (r"predictor\.transformer\.layers\.(\d+)\.attn\.to_out\.0\.", r"predictor.blocks.\1.to_out."),
    (r"predictor\.transformer\.layers\.(\d+)\.mlp\.net\.0\.", r"predictor.blocks.\1.mlp_norm."),
    (r"predictor\.transformer\.layers\.(\d+)\.mlp\.net\.1\.", r"predictor.blocks.\1.fc1."),
    (r"predictor\.transformer\.layers\.(\d+)\.mlp\.net\.4\.", r"predictor.blocks.\1.fc2."),
    (r"predictor\.transformer\.layers\.(\d+)\.adaLN_modulation\.1\.", r"predictor.blocks.\1.adaln."),
    (r"predictor\.transformer\.(norm|input_proj|cond_proj|output_proj)\.", r"predictor.\1."),
    (r"action_encoder\.patch_embed\.", "action_encoder.smooth."),
    (r"action_encoder\.embed\.0\.", "action_encoder.fc1."),
    (r"action_encoder\.embed\.2\.", "action_encoder.fc2."),
    (r"(projector|pred_proj)\.net\.0\.", r"\1.fc1."),
    (r"(projector|pred_proj)\.net\.1\.", r"\1.norm."),
    (r"(projector|pred_proj)\.net\.3\.", r"\1.fc2."),
)
# In the published state dict but not used when planning: HF ViT's mask token (iBOT-style masking)
# and the SIGReg loss's constant buffers when the whole training module was saved.
_UNUSED = re.compile(r"encoder\.embeddings\.mask_token|sigreg\..*")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`weights.pt` or `<name>_weight.ckpt` -> the JEPA state dict (CPU tensors), weights-only.

    A Lightning-style wrapper ({"state_dict": ...}, keys prefixed "model.") is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise LeWMImportError(f"no checkpoint at {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        hint = (" It looks like `<name>_object.ckpt`, the whole pickled module; import the weights-only "
                "`<name>_weight.ckpt` beside it (or the Hugging Face `weights.pt`) instead."
                if "object" in path.name else "")
        raise LeWMImportError(f"{path} is not a weights-only state dict; it was refused and nothing in it was "
                              f"run.{hint} ({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError) as exc:
        raise LeWMImportError(f"{path} is not a readable torch file: {exc}") from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LeWMImportError(f"{path} does not hold a state dict of tensors (got {type(sd).__name__})")
    if all(k.startswith("model.") for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items()}
    return dict(sd)


def to_project_names(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a published state dict onto `models.lewm.network` (see the module docstring);
    returns the renamed weights and, for messages, each new name's published one. Keys that
    match nothing are an error, listed, so a changed architecture is caught."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unknown = []
    for key, value in sd.items():
        if _UNUSED.fullmatch(key):
            continue
        for pattern, repl in _RENAMES:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                if new == "action_encoder.smooth.weight":
                    if value.dim() != 3 or value.shape[-1] != 1:
                        raise LeWMImportError(f"{key} has shape {tuple(value.shape)}; the action embedder's "
                                              "Conv1d must have kernel size 1 (a per-step map)")
                    value = value[:, :, 0]
                out[new], origin[new] = value.contiguous(), key
                break
        else:
            unknown.append(key)
    if unknown:
        raise LeWMImportError(f"the checkpoint has parameters LeWM does not have: {unknown[:8]}"
                              f"{' ...' if len(unknown) > 8 else ''}; is it a LeWM (le-wm JEPA) state dict?")
    return out, origin


# Configs ---------------------------------------------------------------------
def _resolve(node: Any, root: dict[str, Any]) -> Any:
    """Resolve hydra's `${a.b}` interpolations against the config's root (an unresolved
    `.hydra/config.yaml`); other resolvers are left as they are and caught by the checks."""
    if isinstance(node, dict):
        return {k: _resolve(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root) for v in node]
    if isinstance(node, str):
        m = re.fullmatch(r"\$\{([A-Za-z0-9_.]+)\}", node.strip())
        if m:
            value: Any = root
            for part in m.group(1).split("."):
                if not isinstance(value, dict) or part not in value:
                    raise LeWMImportError(f"config interpolation {node} names no key of the config")
                value = value[part]
            return _resolve(value, root)
    return node


def read_config(path: str | Path) -> dict[str, Any]:
    """`config.json` (the Hugging Face mirror's) or a hydra YAML (a training run's, whose
    `model:` section has the same parts) -> {encoder, predictor, action_encoder, projector, pred_proj}."""
    path = Path(path)
    if not path.is_file():
        raise LeWMImportError(f"no config at {path}")
    try:
        raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise LeWMImportError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(raw, dict):
        raise LeWMImportError(f"{path} must hold a mapping")
    cfg = _resolve(raw, raw)
    if "model" in cfg and isinstance(cfg["model"], dict) and "predictor" in cfg["model"]:
        cfg = cfg["model"]  # a training run's config
    missing = [k for k in ("encoder", "predictor", "action_encoder") if not isinstance(cfg.get(k), dict)]
    if missing:
        raise LeWMImportError(f"{path} lacks the sections {missing}; expected LeWM's config.json (encoder, predictor, "
                              "action_encoder, projector, pred_proj) or a training run's hydra config with `model:`")
    return cfg
