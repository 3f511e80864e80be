"""Planner configuration: the driver's settings and every solver's, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Objective = Literal["last", "all"]
Method = Literal["cem", "icem", "mppi", "gradient", "cem_gradient", "icem_gradient"]
METHODS: tuple[str, ...] = ("cem", "icem", "mppi", "gradient", "cem_gradient", "icem_gradient")


@dataclass(frozen=True)
class CEMConfig:
    """Args (defaults are DINO-WM's paper settings; docs/planning.md explains each solver):
    method: the solver. "cem" (DINO-WM's), "icem" (Pinneri et al. 2020),
        "mppi" (weighted by exp(-cost/temperature)), "gradient" (Adam on the
        actions through the frozen model), "cem_gradient"/"icem_gradient"
        (sampling, then the last `grad_iterations` iterations by gradient).
    horizon: model steps planned (each is `frameskip` env steps).
    num_samples: action sequences drawn per iteration, per request; sample 0
        is always the current mean.
    topk: elites that refit the mean and std.
    opt_steps: maximum CEM iterations.
    var_scale: initial sigma in normalised action space (1 = the training
        data's std).
    min_std: floor on sigma so a collapsed elite set (e.g. topk=1) keeps
        exploring instead of giving sigma 0 (TD-MPC2 clamps the same way).
    objective: "last" compares the final predicted frame to the goal;
        "all" every predicted frame, later frames weighted more (`base**t`).
    alpha: weight of the proprio term against the visual term.
    base: growth of the per-step weights of the "all" objective.
    min_iterations: iterations always run before early stopping may fire.
    patience: window (iterations) over which improvement is measured.
    min_improvement: stop when the best loss improved by less than this
        fraction over the last `patience` iterations.
    memory_budget_mb: activation memory one chunk of samples may use; the
        chunk size is derived from it (halved on out-of-memory). None: 1024 MB
        on CPU, half the device's free memory on CUDA.
    chunk_size: force a chunk size (samples per forward pass); None = derive.
    elite_std: "biased" (divide by k, TD-MPC2) or "unbiased" (k - 1, DINO-WM)
        std of the elites when sigma is refit (CEM, iCEM).
    icem_beta: colored-noise exponent of iCEM's samples along the horizon
        (0 = white as CEM; 2 = the paper's choice for most tasks: smoother,
        lower-frequency action sequences).
    icem_keep_elites: fraction of the elites carried into the next
        iteration's samples (and, shifted, into the next MPC plan).
    icem_decay: iCEM's population shrinks by this factor per iteration
        (num_samples / decay**i, never below 2 * topk).
    mppi_temperature: MPPI weights each sample by exp(-z / temperature), z its
        cost standardised over the iteration's samples (scale-free: the same
        temperature works for any model's loss scale).
    grad_lr: Adam step size on normalised actions (1 = the training std).
    grad_starts: sequences refined in parallel by "gradient" (the warm start
        and grad_starts - 1 perturbed copies); the best is returned.
    grad_iterations: the composite methods' last iterations spent on gradient
        steps (the rest of `opt_steps` is sampling); must be < opt_steps.
    subgoals: plan towards a subgoal on the shortest path through a latent
        subgoal graph (planning/subgoals.py) instead of the goal itself, while
        the goal is more than `subgoal_hops` model steps away along the graph.
        The caller that holds the graph applies it (the server's engine); the
        driver only ever sees the latent it is given.
    subgoal_hops: how far along the graph's path the subgoal lies, in model
        steps. Short (2, below the horizon): a subgoal a short plan can reach
        straight, so the obstacle that a far one hides is never between.
    """

    method: Method = "cem"
    horizon: int = 5
    num_samples: int = 300
    topk: int = 30
    opt_steps: int = 30
    var_scale: float = 1.0
    min_std: float = 0.05
    objective: Objective = "last"
    alpha: float = 0.1
    base: float = 2.0
    min_iterations: int = 5
    patience: int = 3
    min_improvement: float = 0.02
    memory_budget_mb: float | None = None
    chunk_size: int | None = None
    elite_std: Literal["biased", "unbiased"] = "biased"
    icem_beta: float = 2.0
    icem_keep_elites: float = 0.3
    icem_decay: float = 1.25
    mppi_temperature: float = 0.5
    grad_lr: float = 0.1
    grad_starts: int = 4
    grad_iterations: int = 5
    subgoals: bool = False
    subgoal_hops: int = 2

    def __post_init__(self) -> None:
        # Strict: a server builds this from client overrides and answers the ValueError.
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: expected one of {list(METHODS)}")
        if not isinstance(self.subgoals, bool):
            raise ValueError(f"subgoals={self.subgoals!r}: must be true or false")
        for name in ("horizon", "num_samples", "topk", "opt_steps", "patience", "grad_starts", "grad_iterations",
                     "subgoal_hops"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("min_iterations", self.min_iterations, minimum=0)
        if self.chunk_size is not None:
            _check_int("chunk_size", self.chunk_size, minimum=1, extra=" or None")
        for name in ("var_scale", "base", "mppi_temperature", "grad_lr", "icem_decay"):
            _check_float(self, name, positive=True)
        if self.memory_budget_mb is not None:
            _check_float(self, "memory_budget_mb", positive=True)
        for name in ("min_std", "alpha", "min_improvement", "icem_beta", "icem_keep_elites"):
            _check_float(self, name, positive=False)
        if self.icem_decay < 1:
            raise ValueError(f"icem_decay={self.icem_decay!r}: must be >= 1 (the population shrinks or stays)")
        if self.icem_keep_elites > 1:
            raise ValueError(f"icem_keep_elites={self.icem_keep_elites!r}: a fraction of the elites, at most 1")
        if self.elite_std not in ("biased", "unbiased"):
            raise ValueError(f"elite_std={self.elite_std!r}: expected 'biased' or 'unbiased'")
        if self.method.endswith("_gradient") and self.grad_iterations >= self.opt_steps:
            raise ValueError(f"grad_iterations={self.grad_iterations} must be < opt_steps={self.opt_steps} "
                             f"for method={self.method!r}: the first iterations sample")
        if self.topk > self.num_samples:
            raise ValueError(f"topk={self.topk} exceeds num_samples={self.num_samples}: "
                             "the elites are chosen among the samples")
        if self.objective not in ("last", "all"):
            raise ValueError(f"objective={self.objective!r}: expected 'last' or 'all'")

    @classmethod
    def paper(cls) -> "CEMConfig":
        """DINO-WM's published settings: horizon 5, 300 samples, top 30, 30 iterations."""
        return cls()

    @classmethod
    def cpu_preset(cls) -> "CEMConfig":
        """Fewer samples and iterations, for planning on a CPU within ~a few 100 ms."""
        return cls(num_samples=100, topk=10, opt_steps=15, min_iterations=4, patience=3)

    @classmethod
    def for_model(cls, model: Any, device_type: str = "cpu") -> "CEMConfig":
        """The default for serving `model`: the paper settings on a GPU, the CPU
        preset elsewhere, with the settings the model's trainer recommends on
        top (artifact metadata "planner", e.g. the objective and alpha that
        reach goals with this model's latent space)."""
        base = cls.paper() if device_type == "cuda" else cls.cpu_preset()
        recommended = model.planner_recommendation
        unknown = sorted(set(recommended) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"model metadata 'planner' has unknown CEM settings {unknown}")
        return replace(base, **recommended)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _check_int(name: str, value: Any, minimum: int, extra: str = "") -> None:
    """An int (not a bool, not a float such as 3.0) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}{extra}")


def _check_float(cfg: Any, name: str, positive: bool) -> None:
    """A finite real number (an int is accepted and stored as float; bool, NaN
    and +-inf are not), > 0 when `positive`, else >= 0."""
    value = getattr(cfg, name)
    rule = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number {rule}")
    if (positive and not value > 0) or (not positive and not value >= 0):
        raise ValueError(f"{name}={value!r}: must be {rule}")
    object.__setattr__(cfg, name, float(value))  # frozen: the one normalisation, at construction
