"""benchmarks.studies.dino_size --quick: the whole path on a DINO-WM-shaped model (native artifact,
imported DINO-WM-format run, in-process phases, the real server as a subprocess)."""

from __future__ import annotations

import json

from benchmarks.studies.dino_size import main
from models import load_model


def test_quick_run_measures_both_artifacts_and_the_server(capsys, tmp_path):
    assert main(["--quick", "--work-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    models = {r["artifact"]: r for r in out["rows"] if "server" not in r}
    assert set(models) == {"native", "imported"} and out["summary"]["peak_gflops"] > 0
    for row in models.values():
        for phase in ("encode", "rollout", "cem_iteration", "plan"):
            assert row[phase]["seconds"] > 0 and row[phase]["gflop"] > 0 and row[phase]["peak_memory_mb"] > 0
        assert row["plan"]["iterations"] == 2 and row["rollout"]["samples"] == 4
    (server,) = [r["server"] for r in out["rows"] if "server" in r]
    assert server["plan"]["iterations"] == 2 and server["plan"]["server_timing_ms"]["total"] > 0
    assert out["summary"]["note"].startswith("CPU run")  # the CPU defaults say they are not the paper's settings
    # the imported run's statistics are DINO-WM-loader statistics, declared with the importer's flag
    assert load_model(tmp_path / "dino_wm_run" / "imported.pt").stats.provenance["split"] == "all_loaded"
