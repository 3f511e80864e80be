"""Latent-space planning: batched, chunked CEM with early stopping, and MPC warm starts."""

from planning.cem import PlanResult, plan
from planning.config import CEMConfig
from planning.mpc import MPCSession, warm_start
from planning.objectives import objective

__all__ = ["CEMConfig", "MPCSession", "PlanResult", "objective", "plan", "warm_start"]
