"""Write a LeWM the way le-wm publishes it (state dict in the reference's parameter names, and
its config.json), from this project's `LeWM`, so the importer can be tested without the
reference installed. tests/benchmarks/test_lewm_reference.py checks the names against the
reference itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from models.lewm import LeWM

_PUBLISHED = (
    (r"encoder\.cls_token", "encoder.embeddings.cls_token"),
    (r"encoder\.pos_embed", "encoder.embeddings.position_embeddings"),
    (r"encoder\.patch_embed\.", "encoder.embeddings.patch_embeddings.projection."),
    (r"encoder\.blocks\.(\d+)\.q\.", r"encoder.encoder.layer.\1.attention.attention.query."),
    (r"encoder\.blocks\.(\d+)\.k\.", r"encoder.encoder.layer.\1.attention.attention.key."),
    (r"encoder\.blocks\.(\d+)\.v\.", r"encoder.encoder.layer.\1.attention.attention.value."),
    (r"encoder\.blocks\.(\d+)\.out\.", r"encoder.encoder.layer.\1.attention.output.dense."),
    (r"encoder\.blocks\.(\d+)\.fc1\.", r"encoder.encoder.layer.\1.intermediate.dense."),
    (r"encoder\.blocks\.(\d+)\.fc2\.", r"encoder.encoder.layer.\1.output.dense."),
    (r"encoder\.blocks\.(\d+)\.norm1\.", r"encoder.encoder.layer.\1.layernorm_before."),
    (r"encoder\.blocks\.(\d+)\.norm2\.", r"encoder.encoder.layer.\1.layernorm_after."),
    (r"encoder\.norm\.", "encoder.layernorm."),
    (r"predictor\.pos_embedding", "predictor.pos_embedding"),
    (r"predictor\.blocks\.(\d+)\.attn_norm\.", r"predictor.transformer.layers.\1.attn.norm."),
    (r"predictor\.blocks\.(\d+)\.to_qkv\.", r"predictor.transformer.layers.\1.attn.to_qkv."),
    (r"predictor\.blocks\.(\d+)\.to_out\.", r"predictor.transformer.layers.\1.attn.to_out.0."),
    (r"predictor\.blocks\.(\d+)\.mlp_norm\.", r"predictor.transformer.layers.\1.mlp.net.0."),
    (r"predictor\.blocks\.(\d+)\.fc1\.", r"predictor.transformer.layers.\1.mlp.net.1."),
    (r"predictor\.blocks\.(\d+)\.fc2\.", r"predictor.transformer.layers.\1.mlp.net.4."),
    (r"predictor\.blocks\.(\d+)\.adaln\.", r"predictor.transformer.layers.\1.adaLN_modulation.1."),
    (r"predictor\.norm\.", "predictor.transformer.norm."),
    (r"action_encoder\.smooth\.", "action_encoder.patch_embed."),
    (r"action_encoder\.fc1\.", "action_encoder.embed.0."),
    (r"action_encoder\.fc2\.", "action_encoder.embed.2."),
    (r"(projector|pred_proj)\.fc1\.", r"\1.net.0."),
    (r"(projector|pred_proj)\.norm\.", r"\1.net.1."),
    (r"(projector|pred_proj)\.fc2\.", r"\1.net.3."),
)


def published_state_dict(model: LeWM) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        for pattern, repl in _PUBLISHED:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                out[new] = value.unsqueeze(-1).clone() if new == "action_encoder.patch_embed.weight" else value.clone()
                break
        else:
            raise KeyError(key)
    return out


def published_config(model: LeWM) -> dict[str, Any]:
    """config.json as the Hugging Face mirror writes it: each part's constructor arguments."""
    c = model.config
    return {
        "encoder": {"size": "tiny", "patch_size": c.patch_size, "image_size": c.image_size, "hidden_size": c.vit_dim,
                    "num_hidden_layers": c.vit_depth, "num_attention_heads": c.vit_heads,
                    "intermediate_size": c.vit_mlp_dim},
        "predictor": {"num_frames": c.num_hist, "depth": c.depth, "heads": c.heads, "mlp_dim": c.mlp_dim,
                      "input_dim": c.embed_dim, "hidden_dim": c.predictor_dim, "output_dim": c.embed_dim,
                      "dim_head": c.dim_head, "dropout": 0.1, "emb_dropout": 0.0},
        "action_encoder": {"input_dim": c.action_dim, "emb_dim": c.embed_dim},
        "projector": {"input_dim": c.vit_dim, "output_dim": c.embed_dim, "hidden_dim": c.projector_hidden},
        "pred_proj": {"input_dim": c.embed_dim, "output_dim": c.embed_dim, "hidden_dim": c.pred_proj_hidden},
    }


def write_published(model: LeWM, folder: Path) -> tuple[Path, Path]:
    """weights.pt + config.json in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(published_state_dict(model), folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(published_config(model)))
    return folder / "weights.pt", folder / "config.json"
