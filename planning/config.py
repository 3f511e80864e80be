"""The planner's configuration: the driver's settings, and one section per solver.

    PlannerConfig(method="icem", horizon=5, max_iterations=15)      the driver's settings
    config.solver("icem")  -> ICEMSettings(samples=300, elites=30, sigma=1.0, beta=2.0, ...)
    config.updated({"max_iterations": 10, "icem": {"samples": 150}})   a request's overrides

Each solver declares its own settings class in its own file (`planning/cem.py`
`CEMSettings`, ...); `planning.registry.SOLVERS` lists the solvers, and the
config holds one section for each, so switching `method` keeps every
solver's budget. docs/planning.md explains each solver and setting.

The previous release's flat names (``num_samples``, ``topk``, ``opt_steps``,
``var_scale``, ``icem_beta``, ...) are still accepted by `updated` and mapped
to the new ones: a flat name that several solvers share (``num_samples``)
sets that setting in every section that has it, which is what it meant
then. `legacy_names` lists the ones a mapping used, so a server can say so.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from planning.registry import SOLVERS
from planning.settings import Settings, setting


def _section_types() -> dict[str, type[Settings]]:
    """Every registered solver's settings class, by section name (registering a solver adds its section)."""
    return _section_types_of(tuple(SOLVERS.items()))


@functools.cache
def _section_types_of(solvers: tuple[tuple[str, type[Any]], ...]) -> dict[str, type[Settings]]:
    return {name: s.settings_type for name, s in solvers if s.settings_type is not None}


def _sections() -> dict[str, Settings]:
    """Every registered solver's settings at their defaults, by section name."""
    return {name: kind() for name, kind in _section_types().items()}


@dataclass(frozen=True)
class PlannerConfig(Settings):
    """The driver's settings (defaults: DINO-WM's paper settings) and each solver's (`solvers`)."""

    method: str = setting("cem", "the solver (planning/registry.py; docs/planning.md)", choices=lambda: tuple(SOLVERS))
    horizon: int = setting(5, "model steps planned (each is frameskip env steps)", ge=1, limit="max_horizon")
    max_iterations: int = setting(30, "iterations at most (early stopping may end a plan sooner)", ge=1,
                                  limit="max_opt_steps", legacy="opt_steps")
    warm_max_iterations: int = setting(30, "iterations at most when the plan starts from the previous plan (an MPC "
                                       "replan, or a client's init); the smaller of this and max_iterations applies "
                                       "(not to composites, whose phases fill max_iterations)",
                                       ge=1, limit="max_opt_steps")
    objective: str = setting("last", "compare the goal with the last predicted step ('last') or with every step, "
                             "later ones weighted more ('all')", choices=("last", "all"))
    alpha: float = setting(0.1, "weight of the proprio term against the visual term", ge=0, limit="max_alpha")
    base: float = setting(2.0, "growth of the per-step weights of the 'all' objective (base**t)", gt=0, wire=False)
    min_iterations: int = setting(5, "iterations always run before early stopping may fire", ge=0,
                                  limit="max_opt_steps")
    patience: int = setting(3, "window (iterations) over which improvement is measured", ge=1, limit="max_opt_steps")
    min_improvement: float = setting(0.02, "stop when the best loss improved by less than this fraction over the "
                                     "last `patience` iterations", ge=0, limit=100.0)
    memory_budget_mb: float | None = setting(None, "activation memory one chunk of samples may use (None: 1024 MB "
                                             "on CPU, half the free memory on CUDA)", gt=0, wire=False, kind="float")
    chunk_size: int | None = setting(None, "force a chunk size (samples per forward pass); None = derive",
                                     ge=1, wire=False, kind="int")
    subgoals: bool = setting(False, "plan towards a subgoal on the shortest path through the server's latent "
                             "subgoal graph while the goal is far (needs a graph: /health model.subgoals)")
    subgoal_hops: int = setting(2, "model steps along the graph's path to the subgoal", ge=1, limit="max_horizon")
    solvers: Mapping[str, Settings] = dataclasses.field(default_factory=_sections, hash=False)

    def check(self) -> None:
        expected = _section_types()
        for name, kind in expected.items():
            section = self.solvers.get(name)
            if type(section) is not kind:
                raise ValueError(f"{name}: expected {kind.__name__}, got {section!r}")
        if set(self.solvers) != set(expected):
            raise ValueError(f"unknown solver sections {sorted(set(self.solvers) - set(expected))}")
        SOLVERS[self.method].check(self)

    # -- reading ----------------------------------------------------------------------

    def solver(self, name: str | None = None) -> Any:
        """The settings section of solver `name` (default: the chosen method's)."""
        return self.solvers[name or self.method]

    def get(self, path: str) -> Any:
        """A setting by its path: "horizon", "icem.samples"."""
        section, _, name = path.rpartition(".")
        return getattr(self.solvers[section] if section else self, name)

    def to_dict(self) -> dict[str, Any]:
        """Nested: the driver's settings, then one mapping per solver section."""
        out = {f.name: getattr(self, f.name) for f in _driver_fields()}
        return out | {name: section.to_dict() for name, section in self.solvers.items()}

    def cost_paths(self) -> tuple[str, ...]:
        """The settings that make this config's plan more expensive (for "lower X" messages)."""
        own = SOLVERS[self.method].cost_settings
        return tuple(p if "." in p else f"{self.method}.{p}" for p in own) + ("max_iterations", "horizon")

    # -- changing ---------------------------------------------------------------------

    def updated(self, overrides: Mapping[str, Any]) -> PlannerConfig:
        """A new config with `overrides` applied: driver settings by name, solver settings in their
        section's mapping, and the previous release's flat names mapped. Raises ValueError naming
        the first bad or unknown setting by its path."""
        nested = _nest(overrides)
        driver = {k: v for k, v in nested.items() if k not in self.solvers}
        sections = dict(self.solvers)
        for name in (n for n in self.solvers if n in nested):  # registry order: the same error every time
            try:
                sections[name] = dataclasses.replace(self.solvers[name], **nested[name])
            except TypeError:
                unknown = sorted(set(nested[name]) - {f.name for f in dataclasses.fields(self.solvers[name])})
                raise ValueError(f"{name}.{unknown[0]}: not a setting of {name} (its settings: "
                                 f"{', '.join(self.solvers[name].to_dict())})") from None
        unknown = sorted(set(driver) - {f.name for f in _driver_fields()})
        if unknown:
            raise ValueError(f"{unknown[0]}: not a planner setting (the driver's: "
                             f"{', '.join(f.name for f in _driver_fields() if f.metadata['wire'])}; "
                             f"the solvers': {', '.join(sections)})")
        return dataclasses.replace(self, **driver, solvers=sections)

    def with_every(self, **values: Any) -> PlannerConfig:
        """Set each named setting in every solver section that has it (e.g. samples=100 for CEM,
        iCEM and MPPI alike), and in the driver's settings if it is one of them."""
        return self.updated(spread(values))

    # -- presets ----------------------------------------------------------------------

    @classmethod
    def paper(cls) -> PlannerConfig:
        """DINO-WM's published settings: horizon 5, 300 samples, top 30, 30 iterations."""
        return cls()

    @classmethod
    def cpu_preset(cls) -> PlannerConfig:
        """Fewer samples and iterations, for planning on a CPU in about 100 ms: chosen by measurement on the
        shipped models in closed loop (`benchmarks.replan`, `benchmarks.solvers`; docs/benchmarks.md):
        64 samples, top 6, at most 10 iterations for a first plan and 4 for a warm-started replan."""
        return cls(max_iterations=10, warm_max_iterations=4, min_iterations=4,
                   patience=3).with_every(samples=64, elites=6)

    @classmethod
    def for_model(cls, model: Any, device_type: str = "cpu") -> PlannerConfig:
        """The default for serving `model`: the paper settings on a GPU, the CPU preset elsewhere,
        with the settings the model's trainer recommends on top (artifact metadata "planner", e.g.
        the objective and alpha that reach goals with this model's latent space)."""
        base = cls.paper() if device_type == "cuda" else cls.cpu_preset()
        try:
            return base.updated(model.planner_recommendation)
        except ValueError as exc:
            raise ValueError(f"model metadata 'planner': {exc}") from None

    # -- what the settings are ----------------------------------------------------------

    @classmethod
    def declared(cls) -> Iterator[tuple[str, dataclasses.Field]]:
        """(path, field) of every setting: the driver's, then each section's."""
        for f in _driver_fields():
            yield f.name, f
        for name, kind in _section_types().items():
            for f in dataclasses.fields(kind):
                yield f"{name}.{f.name}", f


def _driver_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(PlannerConfig) if f.name != "solvers")


def legacy_names() -> dict[str, tuple[str, ...]]:
    """The previous release's flat names and the paths each now sets."""
    return _legacy_names_of(tuple(_section_types().items()))


@functools.cache
def _legacy_names_of(sections: tuple[tuple[str, type[Settings]], ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    fields = [(f.name, f) for f in _driver_fields()]
    fields += [(f"{name}.{f.name}", f) for name, kind in sections for f in dataclasses.fields(kind)]
    for path, f in fields:
        if f.metadata["legacy"]:
            out.setdefault(f.metadata["legacy"], []).append(path)
    return {k: tuple(v) for k, v in out.items()}


def legacy_used(overrides: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Which of `overrides`' top-level names are the previous release's flat names, and what they set."""
    legacy = legacy_names()
    return {k: legacy[k] for k in overrides if k in legacy and k not in _top_level_names()}


def paths_of(overrides: Mapping[str, Any]) -> set[str]:
    """The setting paths an overrides mapping sets ("horizon", "icem.samples"; legacy names expanded)."""
    legacy = legacy_used(overrides)
    out: set[str] = set()
    for key, value in overrides.items():
        if key in legacy:
            out |= set(legacy[key])
        elif isinstance(value, Mapping):
            out |= {f"{key}.{name}" for name in value}
        else:
            out.add(key)
    return out


def _top_level_names() -> frozenset[str]:
    return frozenset({f.name for f in _driver_fields()} | set(_section_types()))


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Flat legacy names mapped to their paths, then the overrides as given (which win)."""
    legacy = legacy_used(overrides)
    out: dict[str, Any] = {}
    for old, paths in legacy.items():
        for path in paths:
            section, _, name = path.rpartition(".")
            (out.setdefault(section, {}) if section else out)[name] = overrides[old]
    for key, value in overrides.items():
        if key in legacy:
            continue
        if key in _section_types():
            if not isinstance(value, Mapping):
                raise ValueError(f"{key}={value!r}: the {key} solver's settings are a mapping, e.g. "
                                 f"{{\"{key}\": {{...}}}}")
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def spread(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides that set each named setting in every section that has it (and in the driver's, if it is
    one of them): {"samples": 100} -> {"cem": {"samples": 100}, "icem": {...}, "mppi": {...}}."""
    out: dict[str, Any] = {}
    for path, _ in PlannerConfig.declared():
        section, _, name = path.rpartition(".")
        if name in values:
            (out.setdefault(section, {}) if section else out)[name] = values[name]
    unknown = set(values) - {p.rpartition(".")[2] for p, _ in PlannerConfig.declared()}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: no solver has this setting")
    return out
