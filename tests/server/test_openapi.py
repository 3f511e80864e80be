"""/openapi.json says what the server enforces: the planner settings' bounds (this server's limits
included) and that a replan names exactly one of session_id and mpc_state, so OpenAPI-driven clients
and fuzzers send only what it accepts."""

from __future__ import annotations

import jsonschema
import pytest

from planning import PlannerConfig
from server.app import create_app
from server.schemas import section_schema_name
from server.settings import Settings


@pytest.fixture(scope="module")
def schema():
    return create_app(Settings(max_num_samples=64, max_horizon=12, warmup=False)).openapi()


def props(schema, name):
    return schema["components"]["schemas"][name]["properties"]


def test_every_planner_setting_carries_its_bounds_and_this_servers_limits(schema):
    driver, cem, icem = props(schema, "PlannerOverrides"), props(schema, "CemSettings"), props(schema, "IcemSettings")
    assert driver["subgoal_hops"]["minimum"] == 1 and driver["subgoal_hops"]["maximum"] == 12
    assert driver["horizon"]["maximum"] == 12 and driver["max_iterations"]["maximum"] == 100
    assert cem["samples"]["maximum"] == icem["samples"]["maximum"] == 64 and cem["samples"]["minimum"] == 1
    assert icem["keep_elites"]["maximum"] == 1 and icem["beta"]["maximum"] == 10
    assert cem["sigma"]["exclusiveMinimum"] == 0
    assert driver["num_samples"]["deprecated"] is True and driver["num_samples"]["maximum"] == 64
    bounded = {path for path, f in PlannerConfig.declared() if f.metadata["wire"] and f.metadata["kind"] in ("int", "float")}
    for path in bounded:  # every number a client may send has a maximum in the schema
        section, _, name = path.rpartition(".")
        prop = props(schema, section_schema_name(section) if section else "PlannerOverrides")[name]
        assert "maximum" in prop, path


def test_a_replan_must_name_exactly_one_of_session_id_and_mpc_state(schema):
    replan = schema["components"]["schemas"]["ReplanRequest"]
    frame = {"format": "png", "data": "aGk="}
    validator = jsonschema.Draft202012Validator(_local_refs({**replan, "$defs": schema["components"]["schemas"]}))
    assert validator.is_valid({"obs": frame, "session_id": "a"})
    assert validator.is_valid({"obs": frame, "mpc_state": "t"})
    assert validator.is_valid({"obs": frame, "mpc_state": "t", "session_id": None})
    assert not validator.is_valid({"obs": frame})
    assert not validator.is_valid({"obs": frame, "session_id": "a", "mpc_state": "t"})


def _local_refs(node):
    """The schema with #/components/schemas/X references pointing at #/$defs/X."""
    if isinstance(node, dict):
        return {k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" else _local_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_local_refs(v) for v in node]
    return node
