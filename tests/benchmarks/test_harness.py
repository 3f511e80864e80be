"""benchmarks.harness: a real server started and stopped by its pid, the machine record, one result format."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import harness
from models.testing import save_tiny_model


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # reaped or a zombie: gone for our purposes
        return f.read().split(") ", 1)[1][0] == "Z"


def test_a_server_answers_on_localhost_and_is_gone_after_the_block(tmp_path):
    model = save_tiny_model(tmp_path / "tiny.pt")
    with harness.Server(model, threads=1) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.get("/health")["status"] == "ok"
        assert server.get("/stats")["device"]["torch_threads"] == 1  # started with the flag it was given
        assert server.rss() > 0
        pid = server.pid
    assert _gone(pid)


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="did not get ready"):
        harness.Server(tmp_path / "missing.pt", ready_timeout=60)


def test_one_result_format_printed_written_and_read_back(tmp_path, capsys):
    out = tmp_path / "r.json"
    result = harness.Result("demo", {"quick": True, "threads": 1, "out": out})
    result.add({"cell": "a", "x": 1})
    assert harness.read(out)["rows"] == [{"cell": "a", "x": 1}]  # written after every row
    result.add({"cell": "b", "x": 2})
    assert result.finish({"best": "b"}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == harness.read(out)
    assert printed["benchmark"] == "demo" and printed["summary"] == {"best": "b"}
    assert printed["settings"] == {"quick": True, "threads": 1, "out": str(out)}
    m = printed["machine"]
    assert m["torch_threads"] == 1 and m["logical_cores"] >= 1 and len(m["load_average_after"]) == 3
    legacy = tmp_path / "old.jsonl"  # earlier runs in docs/benchmarks/ are JSON lines
    legacy.write_text('{"cell": "c"}\n{"cell": "d"}\n')
    assert [r["cell"] for r in harness.read_rows([out, legacy])] == ["a", "b", "c", "d"]


def test_planner_settings_come_from_one_place():
    from models.testing import tiny_model
    from planning import PlannerConfig

    cfg = harness.planner(None, **harness.budget(50, 10, min_iterations=4))
    assert (cfg.solver().samples, cfg.solver().elites, cfg.max_iterations, cfg.min_iterations) == (50, 5, 10, 4)
    assert cfg.solver("icem").samples == cfg.solver("mppi").samples == 50  # every sampling solver's budget
    assert harness.planner(cfg, cem={"elites": 7}).solver().elites == 7 and cfg.solver().elites == 5
    model = tiny_model()
    assert harness.planner(model, "cpu") == PlannerConfig.for_model(model, "cpu")
    overrides = harness.budget(8, 1, elites=2, min_iterations=3, method="icem", icem={"beta": 1.0})
    assert overrides["max_iterations"] == 1 and overrides["min_iterations"] == 1 and overrides["method"] == "icem"
    assert overrides["icem"] == {"samples": 8, "elites": 2, "beta": 1.0} and overrides["cem"] == {"samples": 8,
                                                                                                  "elites": 2}
