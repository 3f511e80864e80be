import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from envs.collect import CollectConfig, collect
from envs.dataset import Episode, load_dataset, write_dataset
from models import WorldModelConfig, load_model
from training.config import PhaseConfig, TrainConfig
from training.data import compute_stats, split_episodes
from training.trainer import Trainer

MODEL = WorldModelConfig(name="t", image_size=64, encoder_dim=8, conv_channels=(8, 8), token_grid=2, frameskip=2,
                         action_emb_dim=4, proprio_emb_dim=4, num_hist=2, depth=1, heads=2, dim_head=8, mlp_dim=16)
PHASE = PhaseConfig(epochs=2, steps_per_epoch=3, batch_size=8, lr=1e-3, warmup_steps=2, val_batches=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "wall"
    collect(path, CollectConfig(episodes=8, steps=12, seed=0), progress=False)
    return path


def config(dataset, out, **kw):
    return TrainConfig(dataset=str(dataset), out=str(out), model=MODEL, encoder=kw.pop("encoder", PHASE),
                       predictor=kw.pop("predictor", PHASE), **kw)


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_a_short_run_writes_a_servable_model_and_per_component_metrics(dataset, tmp_path):
    state = Trainer(config(dataset, tmp_path), progress=False).run()
    assert state.status == "max_epochs" and state.phase == "done"
    model = load_model(tmp_path / "model.pt")
    assert model.stats.provenance["split"] == "train"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("encoder", 1), ("encoder", 2), ("predictor", 1), ("predictor", 2)]
    assert {"train_recon", "train_latent_reg", "val_recon", "train_grad_norm", "lr"} <= set(rows[0])
    assert {"train_pred_visual", "train_pred_proprio", "val_pred_visual", "val_pred_proprio"} <= set(rows[2])
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "latest.pt").is_file()


@pytest.mark.parametrize("stop_at", [4, 9])  # mid encoder epoch 2; mid predictor epoch 2
def test_sigint_saves_latest_and_resume_continues_exactly(dataset, tmp_path, stop_at):
    Trainer(config(dataset, tmp_path / "straight"), progress=False).run()

    interrupted = Trainer(config(dataset, tmp_path / "resumed"), progress=False)
    steps = []

    def hook(trainer):
        steps.append(1)
        if len(steps) == stop_at:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, caught by the trainer

    interrupted.on_step = hook
    state = interrupted.run()
    assert state.status == "interrupted"
    assert (tmp_path / "resumed" / "latest.pt").is_file()
    assert not (tmp_path / "resumed" / "model.pt").exists()

    state = Trainer(config(dataset, tmp_path / "resumed"), progress=False).run(resume=True)
    assert state.status == "max_epochs"
    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_early_stopping_fires_on_a_flat_validation_curve(dataset, tmp_path):
    flat = replace(PHASE, epochs=20, lr=1e-12, warmup_steps=1, patience=3)
    state = Trainer(config(dataset, tmp_path, predictor=flat), progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    pred = [r for r in rows if r["phase"] == "predictor"]
    assert len(pred) == 1 + 3  # the first epoch sets the best, then `patience` flat epochs
    assert state.status == "early_stopped"
    assert (tmp_path / "model.pt").is_file()


def test_divergence_stops_and_keeps_the_best_model(dataset, tmp_path, monkeypatch):
    trainer = Trainer(config(dataset, tmp_path, predictor=replace(PHASE, epochs=5)), progress=False)
    real = trainer._losses

    def poisoned(phase, rows):
        out = real(phase, rows)
        if phase == "predictor" and trainer.state.epoch >= 1:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer, "_losses", poisoned)
    state = trainer.run()
    assert state.status == "diverged"
    assert (tmp_path / "model.pt").read_bytes() == (tmp_path / "best.pt").read_bytes()
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "model.pt").values())


def test_statistics_come_from_the_train_split_only(tmp_path):
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(10):  # episode i has actions around 10*i: the split changes the mean a lot
        actions = (10.0 * i + rng.normal(size=(6, 2))).astype(np.float32)
        actions[-1] = 0.0
        episodes.append(Episode(frames=np.zeros((6, 8, 8, 3), np.uint8), actions=actions,
                                proprio=rng.normal(size=(6, 2)).astype(np.float32)))
    write_dataset(tmp_path / "d", episodes, {"env": "synthetic"})
    ds = load_dataset(tmp_path / "d")
    split = split_episodes(ds.num_episodes, 0.3, seed=1)
    stats = compute_stats(ds, split, "d")
    train_actions = np.concatenate([ds.episode(int(e)).actions[:-1] for e in split.train])
    all_actions = np.concatenate([ds.episode(e).actions[:-1] for e in range(10)])
    np.testing.assert_allclose(stats.action_mean.numpy(), train_actions.mean(0), rtol=1e-5)
    assert np.abs(stats.action_mean.numpy() - all_actions.mean(0)).max() > 1.0
    assert stats.provenance["split"] == "train" and stats.provenance["num_episodes"] == len(split.train)
    assert set(split.train).isdisjoint(split.val) and len(split.train) + len(split.val) == 10


def test_unknown_config_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown keys \\['epoch'\\]"):
        TrainConfig.from_dict({"dataset": "d", "out": "o", "encoder": {"epoch": 3}})


def test_stats_cli_writes_the_train_split_statistics_the_importer_reads(dataset, tmp_path):
    from models import NormStats
    from training.stats import main

    assert main([str(dataset), "--out", str(tmp_path / "s.json"), "--seed", "3"]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    stats = NormStats.from_dict(data)  # what the importer builds from the file
    ds = load_dataset(dataset)
    expected = compute_stats(ds, split_episodes(ds.num_episodes, 0.1, 3), str(dataset))
    torch.testing.assert_close(stats.action_mean, expected.action_mean)
    assert stats.provenance["split"] == "train" and "seed=3" in stats.provenance["split_rule"]
