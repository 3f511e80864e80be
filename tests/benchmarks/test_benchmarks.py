"""The benchmark scripts run (in --quick mode), report what they promise, and count FLOPs right."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import flops, plan_latency, server_load
from benchmarks.common import dino_wm_config, random_model, reachable_problem
from benchmarks.naive import naive_plan, naive_rollout
from models.testing import TINY_CONFIG
from planning import CEMConfig, plan


def run_json(main, argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_naive_planner_returns_our_plan_without_early_stopping():
    """Same samples, same arithmetic: only the execution differs."""
    model = random_model(TINY_CONFIG, seed=1)
    prob = reachable_problem(model, 2, 4, seed=0)
    cfg = CEMConfig(horizon=4, num_samples=16, topk=4, opt_steps=4, min_iterations=4)
    ours = plan(model, prob.z_obs, prob.z_goal, cfg, seeds=[3, 4])
    ref = naive_plan(model, prob.pixels, prob.norm_proprio, prob.z_goal, cfg, seeds=[3, 4])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.actions, b.actions, rtol=1e-4, atol=1e-5)
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert a.loss_trace == pytest.approx(b.loss_trace, rel=1e-4)


@pytest.mark.parametrize("cfg", [TINY_CONFIG, dino_wm_config(1)], ids=["conv", "dino-wm"])
def test_analytic_flops_match_torch_flop_counter(cfg):
    """torch counts matmuls and convolutions as executed (not SDPA on CPU, so ours'
    attention is left out of that comparison; the naive rollout's is manual)."""
    model = random_model(cfg, vit_depth=1)
    prob = reachable_problem(model, 2, 5, seed=0)
    actions = torch.randn(2, 5, cfg.action_dim)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as naive_count:
            naive_rollout(model, prob.pixels, prob.norm_proprio, actions)
        with FlopCounterMode(display=False) as ours_count:
            model.rollout(prob.z_obs, actions)
    naive = flops.rollout_flops(model.config, 5, "naive") * 2
    ours = flops.rollout_flops(model.config, 5, "ours") * 2
    assert naive_count.get_total_flops() == pytest.approx(naive.total, rel=0.02)
    counted = sum(n for op, n in ours_count.get_flop_counts()["Global"].items() if "bmm" not in str(op))
    assert counted == pytest.approx(ours.linear, rel=0.02)
    assert ours.total < naive.total


def test_dino_wm_plan_is_about_a_petaflop():
    """DESIGN.md: a DINO-WM-size plan (paper settings, published planner) is about 1.1 PFLOP."""
    assert 1.0e15 < flops.plan_flops(dino_wm_config(14), CEMConfig.paper(), 30, "naive").total < 1.3e15


def test_plan_latency_quick(capsys):
    out = run_json(plan_latency.main, ["--quick", "--json", "--threads", "1", "--sweep", ""], capsys)
    assert {"speedup_vs_naive", "fraction_of_peak", "machine", "rows", "peak_gflops"} <= out.keys()
    assert out["speedup_vs_naive"] > 0 and 0 < out["fraction_of_peak"]
    for row in out["rows"]:
        for key in ("plan", "replan", "naive", "iterations", "early_stop_saving", "final_objective"):
            assert key in row, key
        assert row["plan"]["p50_ms"] > 0 and row["plan"]["p95_ms"] >= row["plan"]["p50_ms"]
        fo = row["final_objective"]
        assert fo["ours_no_early_stop"] == pytest.approx(fo["naive"], rel=1e-3)  # equal plans
        assert all(row["naive_same_plan"])
    assert out["machine"]["torch_threads"] == 1
    # The closed-loop row times what a client sees: encode + plan per request, along real episodes.
    loop = out["closed_loop"]
    assert loop["requests"] >= loop["cold_plans"] == 1
    assert loop["encode_plus_plan"]["p50_ms"] >= loop["plan"]["p50_ms"] > 0 and loop["encode"]["p50_ms"] > 0
    assert loop["iterations_mean"] >= 1


def test_flops_quick(capsys):
    out = run_json(flops.main, ["--quick", "--json", "--threads", "1"], capsys)
    assert out["peak_gflops"] > 0 and 0 < out["fraction_of_peak"]
    assert len(out["ladder"]) == 5 and all(r["seconds"] > 0 for r in out["ladder"])
    assert out["ladder"][-1]["gflop"] < out["ladder"][0]["gflop"]


def test_server_load_quick(capsys):
    out = run_json(server_load.main, ["--quick", "--json", "--threads", "1"], capsys)
    assert {o["format"] for o in out["overhead"]} == {"raw", "png"}
    assert all(o["errors"] == 0 and o["overhead_ms"] > 0 for o in out["overhead"])
    (phase,) = out["phases"]
    assert phase["errors"] == 0 and phase["requests"] > 0 and phase["throughput_rps"] > 0
    assert phase["p99_ms"] >= phase["p50_ms"] > 0
    assert phase["rss_growth"] is not None and phase["mean_batch_requests"] >= 1


def test_server_load_refuses_a_remote_url():
    with pytest.raises(SystemExit, match="localhost"):
        server_load.main(["--url", "http://example.com:8000", "--quick"])


def test_fairness_quick_runs_every_phase(capsys):
    from benchmarks import fairness

    result = run_json(fairness.main, ["--quick", "--json"], capsys)
    assert result["alone"]["light"]["n"] > 0 and result["contended"]["light"]["n"] > 0
    assert "planner.too_expensive" not in result["contended"]["errors"]  # the heavy plan is within the limit
    assert result["contended"]["errors"].get("client_hung_up", 0) >= 1
    assert result["burst"]["requests"] == 2 and not result["burst"]["errors"]
    assert result["burst"]["rss_before_mb"] > 0 and result["light_p99_ratio"] > 0


def test_ray_scale_quick_serves_the_same_load_on_a_process_and_a_replica(capsys):
    pytest.importorskip("ray.serve", reason="Ray Serve is the 'ray' extra (make test installs it)")
    from benchmarks import ray_scale

    result = run_json(ray_scale.main, ["--quick", "--json"], capsys)
    for name in ("process", "ray_1_replicas"):
        r = result["results"][name]
        assert r["requests"] > 0 and not r["errors"] and r["p50_ms"] > 0 and len(r["served_by"]) == 1
