"""Latent-space planning: one batched, steppable driver (`PlanBatch`, `plan`) over
several solvers (`planning.registry`), their settings (`PlannerConfig`), and MPC warm starts."""

from planning.config import PlannerConfig
from planning.driver import PlanBatch, plan
from planning.mpc import warm_start
from planning.objectives import objective
from planning.result import PlanResult, StopReason

__all__ = ["PlanBatch", "PlanResult", "PlannerConfig", "StopReason", "objective", "plan", "warm_start"]
