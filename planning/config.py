"""CEM planner configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Objective = Literal["last", "all"]


@dataclass(frozen=True)
class CEMConfig:
    """Args (defaults are DINO-WM's paper settings):
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
        chunk size is derived from it (halved on out-of-memory).
    chunk_size: force a chunk size (samples per forward pass); None = derive.
    """

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
    patience: int = 5
    min_improvement: float = 1e-3
    memory_budget_mb: float = 1024.0
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("horizon", "num_samples", "topk", "opt_steps", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be an integer >= 1")
        if self.topk > self.num_samples:
            raise ValueError(f"topk={self.topk} exceeds num_samples={self.num_samples}: "
                             "the elites are chosen among the samples")
        if self.objective not in ("last", "all"):
            raise ValueError(f"objective={self.objective!r}: expected 'last' or 'all'")
        if not self.var_scale > 0:
            raise ValueError(f"var_scale={self.var_scale}: must be > 0")
        if not self.min_std >= 0:
            raise ValueError(f"min_std={self.min_std}: must be >= 0")
        if not self.alpha >= 0:
            raise ValueError(f"alpha={self.alpha}: must be >= 0")
        if not self.base > 0:
            raise ValueError(f"base={self.base}: must be > 0")
        if self.min_iterations < 0:
            raise ValueError(f"min_iterations={self.min_iterations}: must be >= 0")
        if not self.min_improvement >= 0:
            raise ValueError(f"min_improvement={self.min_improvement}: must be >= 0")
        if not self.memory_budget_mb > 0:
            raise ValueError(f"memory_budget_mb={self.memory_budget_mb}: must be > 0")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size}: must be >= 1 or None")

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
        recommended = dict(getattr(model, "metadata", {}).get("planner") or {})
        unknown = sorted(set(recommended) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"model metadata 'planner' has unknown CEM settings {unknown}")
        return replace(base, **recommended)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
