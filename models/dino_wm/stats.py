"""Action/proprio statistics for an imported DINO-WM run: reading a statistics
file (JSON, NPZ or a weights-only torch dict) and, for a file that does not
say how it was computed, building its provenance from the importer's
`--stats-provenance` flag and the run's hydra.yaml. See docs/dino_wm_import.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.stats import NormStats, read_stats_file

STATS_KEYS = ("action_mean", "action_std", "proprio_mean", "proprio_std")
# DINO-WM's dataset classes also hold state statistics; a file dumped from them may carry them (unused here).
IGNORED_STATS_KEYS = ("state_mean", "state_std")
# --stats-provenance: how a file without its own provenance was computed -> NormStats split
PROVENANCE_KINDS = {"dino-wm-loader": "all_loaded", "published": "published", "train": "train"}


class DinoWMImportError(ValueError):
    """The run cannot be imported faithfully; the message says what and why."""


def cfg_value(cfg: dict[str, Any], key: str, default: Any = ...) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise DinoWMImportError(f"hydra.yaml has no {key!r}")
            return default
        node = node[part]
    return node


# Statistics ------------------------------------------------------------------
def read_stats(path: str | Path, provenance: dict[str, Any] | None = None) -> NormStats:
    """Action/proprio statistics from JSON, NPZ or a weights-only torch file, with their provenance.

    JSON: {"action_mean": [...], "action_std": [...], "proprio_mean": [...],
           "proprio_std": [...], "provenance": {"dataset": ..., "split": ..., ...}}
    NPZ: the four arrays plus `provenance`, a JSON string. `.pt`/`.pth`: a dict
    of the four tensors (as dumped from a DINO-WM dataset object).
    provenance: for a file that has none (DINO-WM-style); see
    `stats_provenance`. A file with its own provenance must not be given one.
    """
    path = Path(path)
    try:
        data = read_stats_file(path)
    except ValueError as exc:
        raise DinoWMImportError(str(exc)) from None
    unknown = sorted(set(data) - {*STATS_KEYS, *IGNORED_STATS_KEYS, "provenance"})
    missing = [k for k in STATS_KEYS if k not in data]
    if unknown or missing:
        raise DinoWMImportError(f"{path}: missing {missing}, unknown {unknown}; expected {list(STATS_KEYS)} "
                                "(and 'provenance', or --stats-provenance)")
    if "provenance" in data and provenance is not None:
        raise DinoWMImportError(f"{path} states its own provenance ({data['provenance']}); drop --stats-provenance")
    given = data.get("provenance", provenance)
    if given is None:
        raise DinoWMImportError(
            f"{path} has no 'provenance': say how these statistics were computed with --stats-provenance "
            f"({', '.join(PROVENANCE_KINDS)}), e.g. '--stats-provenance dino-wm-loader --stats-episodes N' for "
            "statistics from DINO-WM's wall or point-maze loader; do not edit the file")
    if not isinstance(given, dict):
        raise DinoWMImportError(f"{path}: provenance must be a mapping, got {given!r}")
    prov = {**given, "stats_file": str(path)}
    try:
        return NormStats(*(torch.as_tensor(np.asarray(data[k], dtype=np.float32)) for k in STATS_KEYS),
                         provenance=prov)
    except ValueError as exc:
        raise DinoWMImportError(f"{path}: {exc}") from exc


def stats_provenance(kind: str, cfg: dict[str, Any], episodes: int | None = None,
                     source: str | None = None) -> dict[str, Any]:
    """Provenance for a statistics file that has none, from what the user says
    (`kind`, see PROVENANCE_KINDS) and the run's hydra.yaml (dataset path, n_rollout)."""
    if kind not in PROVENANCE_KINDS:
        raise DinoWMImportError(f"--stats-provenance {kind!r}: expected one of {list(PROVENANCE_KINDS)}")
    env = cfg_value(cfg, "env.name", None)
    dataset = cfg_value(cfg, "env.dataset.data_path", None) or env or "unknown"
    prov: dict[str, Any] = {"dataset": str(dataset), "split": PROVENANCE_KINDS[kind], "declared_by": "importer flag"}
    if kind == "dino-wm-loader":
        n = episodes if episodes is not None else cfg_value(cfg, "env.dataset.n_rollout", None)
        if n is None:
            raise DinoWMImportError(
                "--stats-provenance dino-wm-loader needs --stats-episodes N: the number of rollouts the loader "
                "loaded (DINO-WM prints 'Loaded N rollouts'; hydra.yaml's env.dataset.n_rollout is unset)")
        loader = cfg_value(cfg, "env.dataset._target_", f"datasets/{env}_dset.py")
        prov.update(num_episodes=int(n), rule=f"DINO-WM loader {loader}: mean/std over all {n} loaded rollouts, "
                                             "before the train/val split")
    elif kind == "published":
        prov["source"] = source or f"constants of DINO-WM's {env} dataset class"
    elif episodes is not None:
        prov["num_episodes"] = int(episodes)
    return prov


def check_stats(stats: NormStats, cfg: dict[str, Any]) -> None:
    if cfg_value(cfg, "normalize_action", True) is False:
        identity = all(torch.equal(t, torch.full_like(t, v)) for t, v in (
            (stats.action_mean, 0.0), (stats.action_std, 1.0), (stats.proprio_mean, 0.0), (stats.proprio_std, 1.0)))
        if not identity:
            raise DinoWMImportError("hydra.yaml has normalize_action: false, so the run trained on raw actions and "
                                    "proprio; the statistics must be mean 0 and std 1")


