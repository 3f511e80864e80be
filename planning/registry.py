"""The solvers a plan can use, by the name that `PlannerConfig.method` takes.

Adding a solver: write its file (a `Solver` subclass with its `name`, its
`settings_type` and its `rollouts`), and add the class here. The planner
config, the server's wire schema, limits, admission cost and /stats follow.
"""

from __future__ import annotations

from planning.cem import CEM
from planning.composite import CEMThenGradient, ICEMThenGradient
from planning.gradient import Gradient
from planning.icem import ICEM
from planning.mppi import MPPI
from planning.solver import Solver

SOLVERS: dict[str, type[Solver]] = {s.name: s for s in (CEM, ICEM, MPPI, Gradient, CEMThenGradient, ICEMThenGradient)}
