"""Declaring planner settings: one field, its type, bounds and meaning, in one place.

Every planner setting, the driver's and each solver's, is a dataclass field
made with `setting(...)`. Its metadata is what everything else derives from:
the checks at construction (`Settings.__post_init__`), the server's wire
schema with its bounds, the server's limits (`limit`: an operator setting's
name or a number), the too-expensive message, and the mapping of the flat
names of the previous release (`legacy`).

Two kinds of upper bound:
  * `le`: what the value may be at all (a fraction is at most 1). Violations
    are invalid settings (the server answers ``planner.invalid``).
  * `limit`: how much this server lets one request ask for (``planner.out_of_bounds``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
            limit: str | float | None = None, legacy: str | None = None,
            wire: bool = True, kind: str | None = None) -> Any:
    """A planner setting: a dataclass field whose metadata carries its rules.

    doc: what it holds, for the schema and `--help`. ge/gt/le: bounds on the
    value (the type follows the default: int, float, bool, or a choice among
    `choices`, or of what a callable `choices` returns when the value is checked, for a
    set that grows, such as the registered solvers; a None default makes it optional).
    limit: the server's upper
    bound on requests, as the name of an operator setting (e.g.
    "max_num_samples") or a number. legacy: the flat name this setting had in
    the previous release (mapped, with a deprecation notice). wire: False for
    settings only the operator or a program sets (memory budget, chunk size).
    kind: "int" or "float" for an optional setting (default None).
    """
    kind = kind or ("choice" if choices else type(default).__name__)
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "choices": choices, "limit": limit, "legacy": legacy,
            "wire": wire, "kind": kind, "optional": default is None}
    return dataclasses.field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> tuple[str, ...]:
    """The values a choice setting accepts now."""
    choices = f.metadata["choices"]
    return tuple(choices()) if callable(choices) else tuple(choices)


@dataclass(frozen=True)
class Settings:
    """A frozen group of settings whose fields are all made with `setting()`; checked at construction.

    `section` names the group in messages ("icem.beta=..."): "" for the driver's.
    """

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "kind" in f.metadata:  # a setting (a config's solver sections are checked by it)
                _check(self, f)
        self.check()

    def check(self) -> None:
        """Invariants between fields (override); raise ValueError naming the value."""

    def path(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def declared(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)


def _check(obj: Settings, f: dataclasses.Field) -> None:
    """Type and bounds of one field; an int given for a float is stored as float (the one normalisation)."""
    m, name, value = f.metadata, obj.path(f.name), getattr(obj, f.name)
    if value is None and m["optional"]:
        return
    kind = m["kind"]
    if kind == "choice":
        if value not in choices_of(f):
            raise ValueError(f"{name}={value!r}: expected one of {list(choices_of(f))}")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: must be true or false")
        return
    rule = _rule(m)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not _within(value, m):
            extra = " or None" if m["optional"] else ""
            raise ValueError(f"{name}={value!r}: must be an integer {rule}{extra}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number {rule}")
    if not _within(value, m):
        raise ValueError(f"{name}={value!r}: must be {rule}")
    object.__setattr__(obj, f.name, float(value))  # frozen: normalised once, here


def _within(value: float, m: dict[str, Any]) -> bool:
    return ((m["ge"] is None or value >= m["ge"]) and (m["gt"] is None or value > m["gt"])
            and (m["le"] is None or value <= m["le"]))


def _rule(m: dict[str, Any]) -> str:
    parts = [f"{op} {m[key]:g}" for key, op in (("gt", ">"), ("ge", ">="), ("le", "<=")) if m[key] is not None]
    return " and ".join(parts)
