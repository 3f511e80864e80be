"""benchmarks.studies.threads runs (in --quick mode) against real servers and cleans up after itself."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.studies import threads


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A stopped child that nobody reaped yet is a zombie: gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_threads_quick_measures_every_setting_and_stops_its_load(capsys):
    assert threads.main(["--quick", "--settings", "default,1"]) == 0
    out = json.loads(capsys.readouterr().out)
    summary = out["summary"]
    assert out["benchmark"] == "threads" and summary["threads"] == ["default", "1"]
    rows = {r["threads"]: r for r in out["rows"]}
    assert set(rows) == {"default", "1"}
    for label, row in rows.items():
        assert row["errors"] == [], label
        assert len(row["round_trip_ms"]) == summary["rounds"] == 2
        assert row["round_trip_p50_ms"] >= row["server_plan_p50_ms"] > 0
        conc = row["concurrent"]
        assert conc["errors"] == [] and conc["ok"] == conc["requests"] == 4
        assert conc["wall_s"] * 1000 >= conc["p50_ms"] > 0
    # The server was really started with the flag, and `default` is the server's own count.
    assert rows["1"]["server_torch_threads"] == 1
    assert rows["default"]["server_torch_threads"] >= 1
    assert len(summary["load_pids"]) == summary["load_processes"] == 1
    assert not any(_alive(pid) for pid in summary["load_pids"])


@pytest.mark.parametrize("bad", ["0", "two", "1,,2"])
def test_threads_refuses_a_bad_setting(bad):
    with pytest.raises(SystemExit, match="--settings item"):
        threads.main(["--quick", "--settings", bad])
