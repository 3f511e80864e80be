"""Latent-space planning: one batched, steppable driver (`PlanBatch`, `plan`) over
several solvers, and MPC warm starts."""

from planning.config import CEMConfig
from planning.driver import PlanBatch, plan
from planning.mpc import MPCSession, warm_start
from planning.objectives import objective
from planning.result import PlanResult

__all__ = ["CEMConfig", "MPCSession", "PlanBatch", "PlanResult", "objective", "plan", "warm_start"]
