"""The example clients talk HTTP only: they run with wm_client and envs installed, without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_IMPORTED = ("torch", "models", "planning", "server", "training", "benchmarks")


def test_example_clients_import_no_torch_and_no_planner() -> None:
    code = ("import sys, client_examples.closed_loop, client_examples.pusht_eval, client_examples.isaac_sim_client; "
            f"loaded = [m for m in {NOT_IMPORTED!r} if m in sys.modules]; "
            "assert not loaded, loaded; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
