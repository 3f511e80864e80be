"""benchmarks.dino_wm_peer --quick: DINO-WM's own CEMPlanner (from a checkout, imported
at run time) and this project's planners on one imported run. Skips without the
checkout ($DINO_WM or .peers/dino_wm) or the modules its code imports."""

from __future__ import annotations

import json
import math
import sys

import pytest

from benchmarks import dino_wm_peer as peer


def test_a_folder_without_dino_wm_is_not_a_checkout(tmp_path):
    (tmp_path / "planning").mkdir()
    (tmp_path / "planning" / "cem.py").write_text("")
    assert peer.find_checkout(tmp_path) is None  # no models/visual_world_model.py


def test_sizes_refuse_an_image_size_dino_wm_cannot_patch():
    with pytest.raises(ValueError, match="img_size=40"):
        peer.Sizes(img_size=40)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    checkout = peer.find_checkout(None)
    if checkout is None:
        pytest.skip("no DINO-WM checkout ($DINO_WM or .peers/dino_wm; see benchmarks/dino_wm_peer.py)")
    if peer.missing_deps():
        pytest.skip(f"DINO-WM's modules need {peer.missing_deps()} (pip install -e '.[peers]')")
    out = tmp_path_factory.mktemp("peer") / "peer.json"
    assert peer.main(["--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_run_plans_every_cell_on_the_same_weights(quick):
    rows = quick["rows"]
    assert sorted({r["cell"] for r in rows}) == sorted(peer.CELLS)
    for r in rows:
        assert r["seconds"] > 0 and math.isfinite(r["objective"]) and r["objective"] >= 0
    # DINO-WM's objective of its own plan, on its own VWorldModel, equals this project's
    # rollout of the same actions on the imported artifact: both planners see one set of weights.
    assert quick["summary"]["objective_agreement_max_rel"] < 1e-3
    dino = [r for r in rows if r["cell"].startswith("dinowm_")]
    assert all(r["rollouts"] == 2 * 8 and len(r["loss_trace"]) == 2 for r in dino)  # 8 samples x 2 iterations
    cells = quick["summary"]["cells"]
    assert cells["dinowm_cem_30"]["speedup_vs_dinowm_cem_30"] == pytest.approx(1.0)
    assert set(quick["summary"]["target"]) >= {"speedup", "met"}
    lines = peer.table(quick).splitlines()
    assert len(lines) == 2 + len(peer.CELLS) and all(f"`{c}`" in "".join(lines) for c in peer.CELLS)


def test_quick_run_gives_this_projects_modules_back(quick):
    import models
    import planning

    assert "dino_wm" not in (models.__file__ or "") and hasattr(planning, "PlannerConfig")
    assert not any(m.startswith("preprocessor") for m in sys.modules)
