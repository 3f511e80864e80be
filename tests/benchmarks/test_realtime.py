"""benchmarks.realtime: every mode runs on the real-time clock against a harness server, and the
summary pairs episodes every mode solved."""

from __future__ import annotations

import json

from benchmarks import realtime


def test_realtime_quick_runs_every_mode_on_a_server(capsys):
    assert realtime.main(["--quick", "--control-hz", "40", "--max-seconds", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "realtime" and out["machine"]["load_average_after"]
    rows = out["rows"]
    assert sorted({r["mode"] for r in rows}) == ["async", "async_raw", "hold"] and len(rows) == 6
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in ("hold", "async_raw", "async")}
    assert all(r["pending_steps_mean"] == 0 for r in by_mode["hold"] + by_mode["async_raw"])
    assert all(r["pending_steps_mean"] > 0 for r in by_mode["async"])  # compensated requests carry pending steps
    assert all(r["hold_ticks"] > 0 for r in by_mode["hold"]) and not any(r["errors"] for r in rows)
    assert set(out["summary"]["delay_0s"]["modes"]) == {"hold", "async_raw", "async"}


def test_the_summary_compares_time_to_goal_on_episodes_every_mode_solved():
    def r(mode: str, episode: int, success: bool, t: float) -> dict:
        return {"delay_s": 0.0, "mode": mode, "episode": episode, "success": success,
                "time_to_goal_s": t if success else None, "late_plans": 0, "plan_ms_p50": 300.0}

    rows = [r("hold", 0, True, 10.0), r("async", 0, True, 5.0),
            r("hold", 1, True, 8.0), r("async", 1, False, 0.0),  # not paired: async failed it
            r("hold", 2, False, 0.0), r("async", 2, True, 1.0)]
    summary = realtime.summarise(rows)["delay_0s"]
    assert summary["paired_episodes"] == [0]
    assert summary["modes"]["async"]["time_to_goal_s_mean_paired"] == 5.0
    assert summary["modes"]["async"]["speedup_vs_hold_paired"] == 2.0
    assert summary["modes"]["hold"]["success_rate"] == round(2 / 3, 3)
