"""LeWM import: the published formats (weights.pt + config.json; <name>_weight.ckpt with a
config) become artifacts equal to the model they were written from; pickled objects,
mismatched configs and statistics without provenance are refused with a reason."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import yaml

from models import load_model
from models.lewm.checkpoint import LeWMImportError
from models.lewm.importer import PAPER_PLANNER, import_checkpoint, main, read_stats, stats_provenance
from models.lewm.testing import tiny_lewm
from planning import PlannerConfig
from tests.models.lewm_published import published_config, published_state_dict, write_published

STATS = {"action_mean": [0.1, -0.3], "action_std": [1.5, 0.5],
         "provenance": {"dataset": "pusht_expert_train", "split": "all_loaded", "num_episodes": 200,
                        "rule": "le-wm get_column_normalizer"}}


@pytest.fixture
def model():
    return tiny_lewm(seed=5)


@pytest.fixture
def stats_file(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(STATS))
    return path


def _same(a, b):
    frames = torch.randint(0, 256, (2, 28, 28, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    actions = torch.randn(2, 5, a.config.action_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        za, zb = a.encode_observation(frames, None), b.encode_observation(frames, None)
        torch.testing.assert_close(za.visual, zb.visual, rtol=0, atol=0)
        torch.testing.assert_close(a.rollout(za, actions).visual, b.rollout(zb, actions).visual, rtol=0, atol=0)


def test_hugging_face_format_imports_exactly(model, tmp_path, stats_file):
    weights, config = write_published(model, tmp_path / "hf_pusht")
    out = tmp_path / "lewm.pt"
    assert main([str(weights), "--config", str(config), "--stats", str(stats_file), "--frameskip", "2",
                 "--out", str(out), "--name", "lewm-pusht"]) == 0
    loaded = load_model(out)
    _same(loaded, model)
    assert loaded.config.name == "lewm-pusht" and loaded.config.raw_action_dim == 2
    assert loaded.stats.provenance["split"] == "all_loaded"
    torch.testing.assert_close(loaded.stats.action_std, torch.tensor([1.5, 0.5]))
    assert loaded.metadata["planner"] == PAPER_PLANNER and len(loaded.metadata["checkpoint_sha256"]) == 64
    cfg = PlannerConfig.for_model(loaded, "cpu")
    assert (cfg.method, cfg.horizon, cfg.max_iterations, cfg.objective) == ("cem", 5, 30, "last")
    assert (cfg.solver("cem").samples, cfg.solver("cem").elites) == (300, 30)


def test_weight_ckpt_with_a_training_runs_hydra_config(model, tmp_path, stats_file):
    """`<name>_weight.ckpt` beside the run's config: le-wm's lewm.yaml with `model:` interpolating
    its top-level keys and the action embedder's input left open (`???`, read from the weights);
    Lightning's "model." prefix is accepted."""
    weights = tmp_path / "lewm_weight.ckpt"
    torch.save({"model." + k: v for k, v in published_state_dict(model).items()}, weights)
    cfg = published_config(model)
    cfg["encoder"]["image_size"] = "${img_size}"
    cfg["predictor"].update(num_frames="${history_size}", input_dim="${embed_dim}")
    cfg["action_encoder"] = {"_target_": "module.Embedder", "input_dim": "???", "emb_dim": "${embed_dim}"}
    run = {"img_size": 28, "history_size": 3, "embed_dim": 16, "model": {"_target_": "jepa.JEPA", **cfg}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(run))
    imported = import_checkpoint(weights, tmp_path / "config.yaml", read_stats(stats_file), tmp_path / "a.pt",
                                 frameskip=2)
    _same(imported, model)


def test_the_pickled_object_checkpoint_is_refused_without_running_it(tmp_path, stats_file, model):
    _, config = write_published(model, tmp_path)
    path = tmp_path / "lewm_object.ckpt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, as `_object.ckpt` is
    with pytest.raises(LeWMImportError, match="_weight.ckpt"):
        import_checkpoint(path, config, read_stats(stats_file), tmp_path / "a.pt", frameskip=2)


@pytest.mark.parametrize("section,key,value,match", [
    ("predictor", "depth", 3, r"checkpoint lacks .*predictor\.blocks\.2"),
    ("predictor", "mlp_dim", 64, r"layers\.0\.mlp\.net\.1\.weight: config gives \(64, 16\), checkpoint has \(32, 16\)"),
    ("projector", "output_dim", 8, "projector.output_dim=8"),
    ("action_encoder", "input_dim", 6, "takes 4 inputs"),
])
def test_a_config_that_does_not_fit_the_weights_is_refused(model, tmp_path, stats_file, section, key, value, match):
    weights, config = write_published(model, tmp_path)
    cfg = json.loads(config.read_text())
    cfg[section][key] = value
    config.write_text(json.dumps(cfg))
    with pytest.raises(LeWMImportError, match=match):
        import_checkpoint(weights, config, read_stats(stats_file), tmp_path / "a.pt", frameskip=2)


def test_frameskip_must_divide_the_action_input(model, tmp_path, stats_file):
    weights, config = write_published(model, tmp_path)
    with pytest.raises(LeWMImportError, match="frameskip 3"):
        import_checkpoint(weights, config, read_stats(stats_file), tmp_path / "a.pt", frameskip=3)


def test_statistics_must_fit_and_say_where_they_come_from(model, tmp_path):
    weights, config = write_published(model, tmp_path)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"action_mean": [0.0, 0.0], "action_std": [1.0, 1.0]}))
    with pytest.raises(LeWMImportError, match="--stats-provenance"):
        read_stats(bare)
    with pytest.raises(LeWMImportError, match="--stats-episodes"):
        stats_provenance("lewm-loader", "pusht_expert_train")
    stats = read_stats(bare, stats_provenance("lewm-loader", "pusht_expert_train", 200))
    assert stats.provenance["split"] == "all_loaded" and "get_column_normalizer" in stats.provenance["rule"]
    three = tmp_path / "three.json"
    three.write_text(json.dumps({**STATS, "action_mean": [0.0] * 3, "action_std": [1.0] * 3}))
    with pytest.raises(LeWMImportError, match="3 action dims"):
        import_checkpoint(weights, config, read_stats(three), tmp_path / "a.pt", frameskip=2)


def test_cli_reports_errors_without_a_traceback(model, tmp_path, stats_file, capsys):
    weights, config = write_published(model, tmp_path)
    assert main([str(weights), "--config", str(config), "--stats", str(stats_file), "--frameskip", "3",
                 "--out", str(tmp_path / "a.pt")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "a.pt").exists()


def test_unknown_parameters_are_refused(model, tmp_path, stats_file):
    weights, config = write_published(model, tmp_path)
    sd = torch.load(weights, weights_only=True)
    sd["predictor.transformer.layers.0.extra.weight"] = torch.zeros(1)
    torch.save(sd, weights)
    with pytest.raises(LeWMImportError, match="extra.weight"):
        import_checkpoint(weights, config, read_stats(stats_file), tmp_path / "a.pt", frameskip=2)
