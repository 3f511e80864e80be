"""Exactness against the reference, at run time: a seeded LeWM built by stable-worldmodel's
LeWM code (with Hugging Face's ViTModel as encoder) in a separate process, saved as
weights.pt + config.json, imported here, agrees on encodings, one-step predictions, a full
rollout and the planning cost within 1e-4 (fp32). Skips without the reference
(`python -m benchmarks.lewm_reference --prepare .peers/lewm`, or $LEWM_REFERENCE)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import lewm_reference as ref


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    reference = ref.find_reference(None)
    if reference is None:
        pytest.skip("no LeWM reference (python -m benchmarks.lewm_reference --prepare .peers/lewm, or $LEWM_REFERENCE)")
    return ref.run(reference, size="small", seed=7, workdir=tmp_path_factory.mktemp("lewm_ref"))


def test_encodings_predictions_rollout_and_cost_match_the_reference(result):
    checks = result["checks"]
    assert set(checks) >= {"encode", "predict", "rollout", "cost"}  # + le_wm_rollout, le_wm_cost with le-wm's source
    for name, check in checks.items():
        if name.endswith("cost"):  # le-wm's cost sums squares over the embedding: compared relative to its size
            assert check["max_abs"] <= 1e-4 * max(1.0, check["max_ref"]), (name, check)
        else:
            assert check["max_abs"] <= 1e-4, (name, check)
    assert result["ok"] and result["reference"]["versions"]["stable-worldmodel"] == ref.SWM_VERSION


def test_the_reference_never_enters_this_process(result):
    assert not any(m.startswith(("transformers", "lewm_reference_", "stable_worldmodel")) for m in sys.modules)
