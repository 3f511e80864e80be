"""Facts published in DINO-WM's repository that an imported model needs: the
planner settings each environment was evaluated with, and the normalisation
constants its PushT dataset class hard-codes.

Source: github.com/gaoyuezhou/dino_wm at commit DINO_WM_COMMIT (read, never
imported or copied: only the numbers are recorded here, each with its file).

Planner settings map DINO-WM's config keys onto `planning.PlannerConfig`
settings: `objective.mode -> objective`, `objective.alpha -> alpha`,
`objective.base -> base`, the CEM sub-planner's `horizon -> horizon`,
`opt_steps -> max_iterations`, and `num_samples`, `topk`, `var_scale` ->
`cem.samples`, `cem.elites`, `cem.sigma`. DINO-WM's MPC executes
`n_taken_actions` model steps between replans; that belongs to the client's
loop, so it is recorded beside the settings, not in them.
"""

from __future__ import annotations

from typing import Any

DINO_WM_REPO = "gaoyuezhou/dino_wm"
DINO_WM_COMMIT = "0a9492fa12044b852ae9e001cc74604b79c8bb0c"

_CEM = {"horizon": 5, "objective": "last", "base": 2.0, "cem": {"samples": 300, "elites": 30, "sigma": 1.0}}

# env name (hydra.yaml `env.name`) -> (config file, PlannerConfig overrides, n_taken_actions)
PLANNER_SETTINGS: dict[str, tuple[str, dict[str, Any], int | None]] = {
    # conf/plan_wall.yaml: objective alpha 1, mode last; mpc_cem sub-planner opt_steps 10
    "wall": ("conf/plan_wall.yaml", {**_CEM, "max_iterations": 10, "alpha": 1.0}, 5),
    # conf/plan_pusht.yaml: alpha 1; opt_steps 30
    "pusht": ("conf/plan_pusht.yaml", {**_CEM, "max_iterations": 30, "alpha": 1.0}, 5),
    # conf/plan_point_maze.yaml: alpha 0 (visual term only); opt_steps 10
    "point_maze": ("conf/plan_point_maze.yaml", {**_CEM, "max_iterations": 10, "alpha": 0.0}, 5),
    # conf/plan.yaml (objective alpha 1, mode last) with conf/planner/cem.yaml (opt_steps 30):
    # DINO-WM's general default, for environments without their own planning config
    "default": ("conf/plan.yaml + conf/planner/cem.yaml", {**_CEM, "max_iterations": 30, "alpha": 1.0}, None),
}


def planner_settings(env: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PlannerConfig overrides, their source) for a DINO-WM environment name; the
    general default for any other name."""
    key = env if env in PLANNER_SETTINGS else "default"
    path, settings, taken = PLANNER_SETTINGS[key]
    source = {"repo": DINO_WM_REPO, "commit": DINO_WM_COMMIT, "file": path, "env": env,
              "settings_of": key, "n_taken_actions": taken}
    return {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}, source


# datasets/pusht_dset.py: PushTDataset(normalize_action=True) normalises with these
# constants, not with statistics of the loaded data. Actions are divided by
# action_scale=100 before normalising (PushTEnv multiplies by 100 again), so the
# action constants are in units of DINO-WM's PushT env actions (pixels / 100).
PUSHT_ACTION_SCALE = 100.0
PUSHT_ACTION_MEAN = (-0.0087, 0.0068)
PUSHT_ACTION_STD = (0.2019, 0.2002)
# proprio = agent position (2) + agent velocity (2, with_velocity=True, the default)
PUSHT_PROPRIO_MEAN = (236.6155, 264.5674, -2.93032027, 2.54307914)
PUSHT_PROPRIO_STD = (101.1202, 87.0112, 74.84556075, 74.14009094)
PUSHT_SOURCE = f"{DINO_WM_REPO}@{DINO_WM_COMMIT[:7]} datasets/pusht_dset.py: ACTION_MEAN/STD, PROPRIO_MEAN/STD"

# Default `action_scale` of each loader class (none of DINO-WM's configs overrides it).
LOADER_ACTION_SCALE = {"wall": 1.0, "point_maze": 1.0, "pusht": PUSHT_ACTION_SCALE}
