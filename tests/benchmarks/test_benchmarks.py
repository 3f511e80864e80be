"""The benchmark scripts run (in --quick mode, for real: servers, planners) and report what they promise,
in the harness's one result format."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import plan_latency, server_load
from benchmarks.naive import naive_plan
from benchmarks.problems import ROOT, random_model, reachable_problem
from benchmarks.studies import ab_servers, rollout_ladder
from models.testing import TINY_CONFIG
from planning import PlannerConfig, plan

RESULT_KEYS = {"benchmark", "machine", "settings", "rows", "summary"}


def run_json(main, argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    """The result a benchmark prints on stdout: one JSON object in the harness's format."""
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert RESULT_KEYS <= out.keys() and out["settings"]["quick"] is True
    assert {"cpu", "torch", "torch_threads", "load_average_before", "load_average_after", "git_commit"} <= out["machine"].keys()
    return out


def test_naive_planner_returns_our_plan_without_early_stopping():
    """Same samples, same arithmetic: only the execution differs."""
    model = random_model(TINY_CONFIG, seed=1)
    prob = reachable_problem(model, 2, 4, seed=0)
    cfg = PlannerConfig(horizon=4, min_iterations=4, max_iterations=4).with_every(samples=16, elites=4)
    ours = plan(model, prob.z_obs, prob.z_goal, cfg, seeds=[3, 4])
    ref = naive_plan(model, prob.pixels, prob.norm_proprio, prob.z_goal, cfg, seeds=[3, 4])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.actions, b.actions, rtol=1e-4, atol=1e-5)
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.loss_trace == pytest.approx(b.loss_trace, rel=1e-4)


def test_plan_latency_quick(capsys):
    out = run_json(plan_latency.main, ["--quick", "--threads", "1", "--sweep", ""], capsys)
    summary = out["summary"]
    assert {"speedup_vs_naive", "fraction_of_peak", "peak_gflops"} <= summary.keys()
    assert summary["speedup_vs_naive"] > 0 and 0 < summary["fraction_of_peak"]
    plans = [r for r in out["rows"] if r["kind"] == "plan"]
    assert len(plans) == 3
    for row in plans:
        for key in ("plan", "replan", "naive", "iterations", "early_stop_saving", "final_objective"):
            assert key in row, key
        assert row["plan"]["p50_ms"] > 0 and row["plan"]["p95_ms"] >= row["plan"]["p50_ms"]
        fo = row["final_objective"]
        assert fo["ours_no_early_stop"] == pytest.approx(fo["naive"], rel=1e-3)  # equal plans
        assert all(row["naive_same_plan"])
    assert out["machine"]["torch_threads"] == 1
    # The closed-loop row times what a client sees: encode + plan per request, along real episodes.
    (loop,) = [r for r in out["rows"] if r["kind"] == "closed_loop"]
    assert loop["requests"] >= loop["cold_plans"] == 1
    assert loop["encode_plus_plan"]["p50_ms"] >= loop["plan"]["p50_ms"] > 0 and loop["encode"]["p50_ms"] > 0
    assert loop["iterations_mean"] >= 1


def test_rollout_ladder_quick(capsys):
    out = run_json(rollout_ladder.main, ["--quick", "--threads", "1"], capsys)
    assert out["summary"]["peak_gflops"] > 0 and 0 < out["summary"]["fraction_of_peak"]
    ladder = out["rows"]
    assert len(ladder) == 5 and all(r["seconds"] > 0 for r in ladder)
    assert ladder[-1]["gflop"] < ladder[0]["gflop"] and ladder[-1]["execution"] == "cached"


def test_server_load_quick(capsys, tmp_path):
    out = run_json(server_load.main, ["--quick", "--threads", "1", "--out", str(tmp_path / "r.json")], capsys)
    overhead = [r for r in out["rows"] if r["phase"] == "overhead"]
    assert {o["format"] for o in overhead} == {"raw", "png"}
    assert all(o["errors"] == 0 and o["overhead_ms"] > 0 for o in overhead)
    (phase,) = [r for r in out["rows"] if r["phase"] == "load"]
    assert phase["errors"] == 0 and phase["requests"] > 0 and phase["throughput_rps"] > 0
    assert phase["p99_ms"] >= phase["p50_ms"] > 0
    assert phase["rss_growth"] is not None and phase["mean_batch_requests"] >= 1
    assert json.loads((tmp_path / "r.json").read_text()) == out  # --out holds the printed result


def test_ab_servers_against_the_same_checkout_gives_the_same_plans(capsys):
    out = run_json(ab_servers.main, ["--quick", "--other", str(ROOT)], capsys)
    assert out["summary"]["same_plans"] is True  # the same seeds and inputs: the same iterations, request by request
    assert [r["server"] for r in out["rows"]] == ["this", "other"] and all(r["requests"] == 3 for r in out["rows"])
    assert set(out["summary"]["this_over_other"]) == {"round_trip_ms_p50", "plan_ms_per_iteration_p50"}


def test_server_load_refuses_a_remote_url():
    with pytest.raises(SystemExit, match="localhost"):
        server_load.main(["--url", "http://example.com:8000", "--quick"])


def test_fairness_quick_runs_every_phase(capsys):
    from benchmarks import fairness

    result = run_json(fairness.main, ["--quick"], capsys)
    alone, contended, burst = result["rows"]
    assert [alone["phase"], contended["phase"], burst["phase"]] == ["alone", "contended", "burst"]
    assert alone["light"]["n"] > 0 and contended["light"]["n"] > 0
    assert "planner.too_expensive" not in contended["errors"]  # the heavy plan is within the limit
    assert contended["errors"].get("client_hung_up", 0) >= 1
    assert burst["requests"] == 2 and not burst["errors"]
    assert burst["rss_before_mb"] > 0 and result["summary"]["light_p99_ratio"] > 0


def test_ray_scale_quick_serves_the_same_load_on_a_process_and_a_replica(capsys):
    pytest.importorskip("ray.serve", reason="Ray Serve is the 'ray' extra (make test installs it)")
    from benchmarks import ray_scale

    result = run_json(ray_scale.main, ["--quick"], capsys)
    assert [r["deployment"] for r in result["rows"]] == ["process", "ray_1_replicas"]
    for r in result["rows"]:
        assert r["requests"] > 0 and not r["errors"] and r["p50_ms"] > 0 and len(r["served_by"]) == 1
