"""DINO-WM import: checkpoints pickled by DINO-WM-shaped classes convert to
artifacts whose encoder, predictor and rollout match DINO-WM's own forward
pass (`dino_wm_reference.py`, written from the published equations), and
nothing outside the allow-list is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import load_model
from models.dino_wm.checkpoint import STAND_INS, CheckpointError
from models.dino_wm.importer import MEASURED_BUDGET, DinoWMImportError, import_run, main, read_stats
from planning import PlannerConfig, plan
from tests.models.dino_wm_reference import (VQVAE, DinoV2Encoder, DinoVisionTransformer, ProprioceptiveEmbedding,
                                            Reference, ViTPredictor, accelerated, published, randomize,
                                            register_published)

IMG, NUM_HIST, FRAMESKIP, RAW_A, PROPRIO = 224, 3, 2, 2, 4  # DINO-WM's 224 px; smaller runs use 112
TOL = dict(rtol=1e-4, atol=1e-4)


# Run folders -------------------------------------------------------------------
@dataclass
class Run:
    dir: Path
    encoder_weights: Path
    stats: Path
    ref: Reference


STATS = {"action_mean": [0.3, -0.2], "action_std": [1.5, 0.7], "proprio_mean": [10.0, -4.0, 2.0, 0.5],
         "proprio_std": [5.0, 2.0, 1.0, 0.25],
         "provenance": {"dataset": "/data/wall", "split": "train", "num_episodes": 90, "num_frames": 9000}}


def hydra_config(concat_dim: int, emb: int, img_size: int) -> dict:
    return {"img_size": img_size, "frameskip": FRAMESKIP, "concat_dim": concat_dim, "normalize_action": True,
            "action_emb_dim": emb, "num_action_repeat": 1, "proprio_emb_dim": emb, "num_proprio_repeat": 1,
            "num_hist": NUM_HIST, "num_pred": 1, "has_predictor": True, "has_decoder": True,
            "model": {"_target_": "models.visual_world_model.VWorldModel", "train_encoder": False},
            "encoder": {"_target_": "models.dino.DinoV2Encoder", "name": "dinov2_vits14",
                        "feature_key": "x_norm_patchtokens"},
            "predictor": {"_target_": "models.vit.ViTPredictor", "depth": 2, "heads": 2, "mlp_dim": 64,
                          "dropout": 0.1, "emb_dropout": 0, "pool": "mean"},
            "env": {"name": "wall", "dataset": {"_target_": "datasets.wall_dset.load_wall_slice_train_val",
                                                "data_path": "/data/wall", "split_ratio": 0.9}}}


def make_run(root: Path, concat_dim: int = 1, train_encoder: bool = False, seed: int = 0,
             img_size: int = IMG) -> Run:
    torch.manual_seed(seed)
    emb = 10 if concat_dim == 1 else 384
    tokens = (img_size // 16) ** 2 + (2 if concat_dim == 0 else 0)
    dim = 384 + 2 * emb if concat_dim == 1 else 384
    dino = DinoVisionTransformer(depth=2)
    predictor = ViTPredictor(num_patches=tokens, num_frames=NUM_HIST, dim=dim, depth=2, heads=2, mlp_dim=64,
                             dim_head=16)
    act_enc, prop_enc = ProprioceptiveEmbedding(FRAMESKIP * RAW_A, emb), ProprioceptiveEmbedding(PROPRIO, emb)
    for m in (dino, predictor, act_enc, prop_enc):
        randomize(m)
    decoder = VQVAE()
    ckpt = {"epoch": 7, "predictor": predictor,
            "predictor_optimizer": accelerated(predictor.parameters(), lambda: predictor.pos_embedding.square().sum()),
            "decoder": decoder,
            "decoder_optimizer": accelerated(decoder.parameters(), lambda: sum(p.sum() for p in decoder.parameters()),
                                             torch.optim.Adam),
            "action_encoder": act_enc, "proprio_encoder": prop_enc}
    if train_encoder:
        ckpt["encoder"] = DinoV2Encoder(dino)
    run = root / "outputs" / "2025-01-02" / f"12-00-0{seed}"
    (run / "checkpoints").mkdir(parents=True)
    cfg = hydra_config(concat_dim, emb, img_size)
    cfg["model"]["train_encoder"] = train_encoder
    (run / "hydra.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as mp:
        register_published(mp)
        # DINO-WM trains on a GPU: its storages are tagged cuda:0, which must load on a CPU-only machine.
        mp.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, run / "checkpoints" / "model_latest.pth")
    enc_path = root / f"dinov2_vits14_pretrain_{seed}.pth"
    torch.save(dino.state_dict(), enc_path)
    stats = root / "stats.json"
    stats.write_text(json.dumps(STATS))
    ref = Reference(dino, predictor, act_enc, prop_enc, concat_dim, img_size, NUM_HIST)
    for m in (dino, predictor, act_enc, prop_enc):
        m.eval().requires_grad_(False)
    return Run(run, enc_path, stats, ref)


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory) -> tuple[Run, object]:
    run = make_run(tmp_path_factory.mktemp("feature"))
    out = run.dir / "imported.pt"
    import_run(run.dir, read_stats(run.stats), out, run.encoder_weights)
    return run, load_model(out)


def observation(b: int, seed: int = 1, img_size: int = IMG):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (b, img_size, img_size, 3), generator=g, dtype=torch.uint8)
    proprio = torch.tensor(STATS["proprio_mean"]) + torch.randn(b, PROPRIO, generator=g) * 3
    actions = torch.randn(b, 5 * FRAMESKIP, RAW_A, generator=g)  # 5 model steps, env units
    return frames, proprio, actions


def dino_wm_inputs(frames, proprio, actions):
    """DINO-WM's preprocessing: Normalize(0.5, 0.5) frames; dataset-normalised proprio and actions,
    actions grouped `frameskip` env steps per model step."""
    visual = (frames.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    p = (proprio - torch.tensor(STATS["proprio_mean"])) / torch.tensor(STATS["proprio_std"])
    a = (actions - torch.tensor(STATS["action_mean"])) / torch.tensor(STATS["action_std"])
    return visual[:, None], p[:, None], a.reshape(a.shape[0], -1, FRAMESKIP * RAW_A)


# Equivalence -----------------------------------------------------------------------
@torch.no_grad()
def test_encoder_tokens_match_dinov2_on_resized_frames(feature_run):
    run, model = feature_run
    frames, proprio, actions = observation(2)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    want = run.ref.encode(visual, p, a[:, :1])[:, 0, :, :384]
    z = model.encode_observation(frames, proprio)
    torch.testing.assert_close(z.visual, want, **TOL)
    torch.testing.assert_close(z.proprio, run.ref.proprio_encoder(p)[:, 0], **TOL)


@torch.no_grad()
def test_predictor_matches_vit_predictor_on_every_window(feature_run):
    run, model = feature_run
    tokens, dim = model.config.tokens_per_frame, model.config.token_dim
    x = torch.randn(1, NUM_HIST * tokens, dim)
    for frames in (1, NUM_HIST):
        window = x[:, :frames * tokens]
        want = run.ref.predictor(window)
        torch.testing.assert_close(model.predictor(window), want, **TOL)
        torch.testing.assert_close(model.predictor(window, last_only=True), want[:, -tokens:], **TOL)


@torch.no_grad()
def test_rollout_matches_dino_wm_rollout_from_env_units(feature_run):
    run, model = feature_run
    frames, proprio, actions = observation(2, seed=3)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    torch.testing.assert_close(model.codec.to_model(actions), a)
    want_visual, want_proprio = run.ref.rollout(visual, p, a)  # frames 0..H
    got = model.rollout(model.encode_observation(frames, proprio), model.codec.to_model(actions))
    torch.testing.assert_close(got.visual, want_visual[:, 1:], **TOL)
    torch.testing.assert_close(got.proprio, want_proprio[:, 1:], **TOL)


@torch.no_grad()
def test_token_concat_mode_matches_dino_wm(tmp_path):
    run = make_run(tmp_path, concat_dim=0, img_size=112)
    model = import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)
    assert model.config.concat_mode == "token" and model.config.tokens_per_frame == 7 * 7 + 2
    frames, proprio, actions = observation(1, seed=4, img_size=112)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    want_visual, want_proprio = run.ref.rollout(visual, p, a[:, :3])
    got = model.rollout(model.encode_observation(frames, proprio), a[:, :3])
    torch.testing.assert_close(got.visual, want_visual[:, 1:], **TOL)
    torch.testing.assert_close(got.proprio, want_proprio[:, 1:], **TOL)


@torch.no_grad()
def test_fine_tuned_encoder_is_taken_from_the_checkpoint(tmp_path):
    run = make_run(tmp_path, train_encoder=True, seed=2, img_size=112)
    with pytest.raises(DinoWMImportError, match="drop it"):
        import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)
    model = import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt")
    assert model.config.vit_image_size == 98
    frames, proprio, actions = observation(1, img_size=112)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    torch.testing.assert_close(model.encode_observation(frames, proprio).visual,
                               run.ref.encode(visual, p, a[:, :1])[:, 0, :, :384], **TOL)


def test_artifact_records_architecture_statistics_and_provenance(feature_run):
    run, model = feature_run
    c = model.config
    assert (c.encoder, c.image_size, c.vit_image_size, c.vit_depth, c.num_patches) == (
        "dinov2_vits14", 224, 196, 2, 196)
    assert (c.frameskip, c.raw_action_dim, c.proprio_dim, c.token_dim, c.depth, c.heads, c.dim_head, c.mlp_dim) == (
        FRAMESKIP, RAW_A, PROPRIO, 404, 2, 2, 16, 64)
    assert c.name == "dino-wm-2025-01-02-12-00-00"
    torch.testing.assert_close(model.stats.action_std, torch.tensor(STATS["action_std"]))
    assert model.stats.provenance["split"] == "train" and model.stats.provenance["stats_file"] == str(run.stats)
    assert model.metadata["source"] == "dino_wm" and model.metadata["epoch"] == 7
    assert len(model.metadata["checkpoint_sha256"]) == 64 and model.metadata["encoder_weights_sha256"]
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # the stand-ins were allowed for that one load only
    assert not {g[1] for g in torch.serialization.get_safe_globals() if isinstance(g, tuple)} & set(STAND_INS)


@torch.no_grad()
def test_imported_model_plans(feature_run):
    _, model = feature_run
    frames, proprio, _ = observation(1, seed=5)
    z_obs = model.encode_observation(frames, proprio)
    z_goal = model.encode_observation(*observation(1, seed=6)[:2])
    cfg = PlannerConfig(horizon=2, min_iterations=0, max_iterations=2).with_every(samples=6, elites=2)
    (result,) = plan(model, z_obs, z_goal, cfg, seeds=[0])
    assert result.actions.shape == (2, model.config.action_dim) and torch.isfinite(result.actions).all()


def test_cli_writes_an_artifact(feature_run, tmp_path):
    run, _ = feature_run
    out = tmp_path / "cli.pt"
    assert main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--stats", str(run.stats),
                 "--out", str(out), "--name", "pusht"]) == 0
    assert load_model(out).config.name == "pusht"


# Statistics ----------------------------------------------------------------------
def test_cli_refuses_to_write_without_statistics(feature_run, tmp_path):
    run, _ = feature_run
    out = tmp_path / "m.pt"
    with pytest.raises(SystemExit):
        main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--out", str(out)])
    with pytest.raises(DinoWMImportError, match="statistics are required"):
        import_run(run.dir, None, out, run.encoder_weights)  # type: ignore[arg-type]
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"split": "all"}, "unknown origin"),
    ({"split": None}, "split"),
    ({"split": "all_loaded"}, "needs ['rule']"),
])
def test_statistics_of_unknown_origin_are_refused(feature_run, tmp_path, capsys, change, message):
    run, _ = feature_run
    prov = {k: v for k, v in {**STATS["provenance"], **change}.items() if v is not None}
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({**STATS, "provenance": prov}))
    out = tmp_path / "m.pt"
    assert main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--stats", str(stats),
                 "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def bare_stats(tmp_path, suffix=".json"):
    """Statistics as DINO-WM's dataset object holds them: no provenance, state statistics too."""
    values = {k: v for k, v in STATS.items() if k != "provenance"}
    values.update(state_mean=[0.0] * 4, state_std=[1.0] * 4)
    path = tmp_path / f"dino_wm_stats{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        torch.save({k: torch.tensor(v) for k, v in values.items()}, path)
    return path


@pytest.mark.parametrize("suffix", [".json", ".pth"])
def test_dino_wm_loader_statistics_import_with_a_provenance_flag(feature_run, tmp_path, capsys, suffix):
    run, _ = feature_run
    stats, out = bare_stats(tmp_path, suffix), tmp_path / "m.pt"
    base = [str(run.dir), "--encoder-weights", str(run.encoder_weights), "--stats", str(stats), "--out", str(out)]
    assert main(base) == 2  # a file that does not say where it comes from needs the flag
    assert "--stats-provenance" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--stats-provenance", "dino-wm-loader"]) == 2  # how many rollouts?
    assert "--stats-episodes" in capsys.readouterr().err
    assert main([*base, "--stats-provenance", "dino-wm-loader", "--stats-episodes", "1920"]) == 0
    prov = load_model(out).stats.provenance
    assert (prov["split"], prov["num_episodes"], prov["dataset"]) == ("all_loaded", 1920, "/data/wall")
    assert "load_wall_slice_train_val" in prov["rule"] and prov["stats_file"] == str(stats)


def test_a_file_with_its_own_provenance_is_not_relabelled(feature_run, tmp_path, capsys):
    run, _ = feature_run
    assert main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--stats", str(run.stats),
                 "--out", str(tmp_path / "m.pt"), "--stats-provenance", "published"]) == 2
    assert "drop --stats-provenance" in capsys.readouterr().err


def test_published_planner_settings_of_the_environment_are_recommended(feature_run, tmp_path):
    run, model = feature_run  # hydra.yaml env.name: wall
    # the default: DINO-WM's objective and horizon, served with the measured solver and budget
    assert model.metadata["planner"] == {"horizon": 5, "objective": "last", "base": 2.0, "alpha": 1.0,
                                         **MEASURED_BUDGET}
    assert model.metadata["planner_source"]["file"] == "conf/plan_wall.yaml"
    assert model.metadata["planner_source"]["budget"].startswith("measured")
    cfg = PlannerConfig.for_model(model, "cpu")
    assert (cfg.method, cfg.max_iterations, cfg.min_iterations, cfg.objective) == ("cem_gradient", 33, 33, "last")
    assert (cfg.solver("cem").samples, cfg.solver().gradient_iterations, cfg.solver("gradient").lr) == (50, 30, 0.3)
    published = import_run(run.dir, read_stats(run.stats), tmp_path / "published.pt", run.encoder_weights,
                           budget="published")
    assert published.metadata["planner"] == {"horizon": 5, "cem": {"samples": 300, "elites": 30, "sigma": 1.0},
                                             "objective": "last", "base": 2.0, "max_iterations": 10, "alpha": 1.0}
    cfg = PlannerConfig.for_model(published, "cuda")
    assert (cfg.method, cfg.alpha, cfg.max_iterations, cfg.objective) == ("cem", 1.0, 10, "last")
    with pytest.raises(DinoWMImportError, match="budget='fast'"):
        import_run(run.dir, read_stats(run.stats), tmp_path / "x.pt", run.encoder_weights, budget="fast")
    for env, alpha in (("point_maze", 0.0), ("default", 1.0)):
        other = import_run(run.dir, read_stats(run.stats), tmp_path / f"{env}.pt", run.encoder_weights, planner=env)
        assert other.metadata["planner"]["alpha"] == alpha
        PlannerConfig.for_model(other)  # every key is a PlannerConfig setting
    none = import_run(run.dir, read_stats(run.stats), tmp_path / "none.pt", run.encoder_weights, planner="none")
    assert "planner" not in none.metadata and PlannerConfig.for_model(none) == PlannerConfig.cpu_preset()


def test_statistics_of_another_action_space_are_refused(feature_run, tmp_path):
    run, _ = feature_run
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({**STATS, "action_mean": [0.0] * 3, "action_std": [1.0] * 3}))
    with pytest.raises(DinoWMImportError, match="3 action dims"):
        import_run(run.dir, read_stats(stats), tmp_path / "m.pt", run.encoder_weights)


def test_npz_statistics_read_like_json(tmp_path):
    npz = tmp_path / "stats.npz"
    np.savez(npz, **{k: np.asarray(v, np.float32) for k, v in STATS.items() if k != "provenance"},
             provenance=json.dumps(STATS["provenance"]))
    json_path = tmp_path / "stats.json"
    json_path.write_text(json.dumps(STATS))
    a, b = read_stats(npz), read_stats(json_path)
    torch.testing.assert_close(a.proprio_std, b.proprio_std)
    assert a.provenance["num_episodes"] == 90


def test_unnormalised_run_needs_identity_statistics(tmp_path):
    run = make_run(tmp_path, img_size=112)
    cfg = yaml.safe_load((run.dir / "hydra.yaml").read_text())
    (run.dir / "hydra.yaml").write_text(yaml.safe_dump({**cfg, "normalize_action": False}))
    with pytest.raises(DinoWMImportError, match="mean 0 and std 1"):
        import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)


@pytest.mark.parametrize("change, message", [
    ({"num_action_repeat": 2}, "num_action_repeat=2"),
    ({"encoder": {"name": "dinov2_vitb14"}}, "only dinov2_vits14"),
    ({"predictor": {"depth": 6, "heads": 2, "mlp_dim": 64}}, "predictor.depth=6"),
    ({"num_hist": 2}, "num_hist=2 frames of 196 tokens"),
    ({"img_size": 448}, "frames of 784 tokens"),
])
def test_config_the_project_cannot_reproduce_is_refused(feature_run, tmp_path, change, message):
    run, _ = feature_run
    cfg = yaml.safe_load((run.dir / "hydra.yaml").read_text())
    other = tmp_path / "run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "model_latest.pth").symlink_to(run.dir / "checkpoints" / "model_latest.pth")
    (other / "hydra.yaml").write_text(yaml.safe_dump({**cfg, **change}))
    with pytest.raises(DinoWMImportError, match=re.escape(message)):
        import_run(other, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)


# Safety --------------------------------------------------------------------------
class _Shell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@published("models.vit.NotAPredictor")
class NotAPredictor:
    pass


@pytest.mark.parametrize("payload, offender", [
    ("shell", f"{os.system.__module__}.system"),
    ("shell_inside_module", f"{os.system.__module__}.system"),
    ("unknown_class", "models.vit.NotAPredictor"),
])
def test_pickle_outside_the_allow_list_is_refused_and_runs_nothing(feature_run, tmp_path, payload, offender):
    run, _ = feature_run
    marker = tmp_path / "pwned"
    other = tmp_path / "run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "hydra.yaml").write_text((run.dir / "hydra.yaml").read_text())
    predictor = run.ref.predictor
    if payload == "shell":
        ckpt = {"epoch": 1, "predictor": _Shell(marker)}
    elif payload == "shell_inside_module":
        predictor.hook = _Shell(marker)  # a payload hidden in an allow-listed module's state
        ckpt = {"epoch": 1, "predictor": predictor}
    else:
        ckpt = {"epoch": 1, "predictor": NotAPredictor()}
    with pytest.MonkeyPatch.context() as mp:
        register_published(mp)
        torch.save(ckpt, other / "checkpoints" / "model_latest.pth")
    predictor.__dict__.pop("hook", None)
    with pytest.raises(CheckpointError, match=re.escape(offender)):
        import_run(other, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)
    assert not marker.exists()
    assert not (tmp_path / "m.pt").exists()
