"""server.settings: flags over WM_* env vars over defaults; invariants at start-up."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_settings import CliApp

from planning import PlannerConfig
from planning.config import legacy_names
from server.schemas import PlannerOverrides
from server.settings import Settings


def test_defaults_bind_localhost_without_auth():
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8000 and s.api_key is None
    assert s.resize_policy == "resize" and s.device == "auto"


def test_env_vars_are_read_and_flags_override_them(monkeypatch):
    monkeypatch.setenv("WM_PORT", "9001")
    monkeypatch.setenv("WM_MAX_SESSIONS", "7")
    monkeypatch.setenv("WM_API_KEY", "from-env")
    monkeypatch.setenv("WM_PLANNER", '{"num_samples": 50}')
    s = CliApp.run(Settings, cli_args=["--port", "9002", "--planner.topk", "5", "--no-warmup"])
    assert s.port == 9002 and s.max_sessions == 7
    assert s.api_key is not None and s.api_key.get_secret_value() == "from-env"
    assert s.planner.num_samples == 50 and s.planner.topk == 5 and s.warmup is False  # deprecated names


def test_planner_defaults_take_each_solvers_section_from_env_and_flags(monkeypatch):
    monkeypatch.setenv("WM_PLANNER", '{"method": "icem", "icem": {"samples": 50}}')
    s = CliApp.run(Settings, cli_args=["--planner.icem.elites", "5", "--planner.max-iterations", "7"])
    assert s.planner.method == "icem" and s.planner.max_iterations == 7
    assert (s.planner.icem.samples, s.planner.icem.elites) == (50, 5)  # merged, setting by setting


def test_unknown_flag_is_an_error():
    with pytest.raises(SystemExit):
        CliApp.run(Settings, cli_args=["--max-sesions", "3"])


def test_default_planner_must_respect_the_limits():
    with pytest.raises(ValidationError, match="max_num_samples"):
        Settings(planner={"num_samples": 5000}, max_num_samples=4096)


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError):
        Settings(resize="reject")
    with pytest.raises(ValidationError):
        Settings(planner={"num_sample": 3})


def test_api_key_is_not_shown_in_repr():
    assert "s3cret" not in repr(Settings(api_key="s3cret"))


def test_the_wire_schema_is_every_declared_setting_and_every_deprecated_name():
    wire = set()
    for name, f in PlannerOverrides.model_fields.items():
        inner = typing.get_args(f.annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            wire |= {f"{name}.{sub}" for sub in inner.model_fields}
        else:
            wire.add(name)
    declared = {path for path, f in PlannerConfig.declared() if f.metadata["wire"]}
    assert wire == declared | set(legacy_names())
    objective = PlannerOverrides.model_fields["objective"].annotation
    assert set(typing.get_args(typing.get_args(objective)[0])) == {"last", "all"}
