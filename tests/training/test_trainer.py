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
    from training.components import decompose_gap
    from training.diagnose import split_phases

    state = Trainer(config(dataset, tmp_path, alpha=0.5), progress=False).run()
    assert state.status == "max_epochs" and state.phase == "done"
    model = load_model(tmp_path / "model.pt")
    assert model.stats.provenance["split"] == "train"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("encoder", 1), ("encoder", 2), ("predictor", 1), ("predictor", 2)]
    assert {"train_recon", "train_latent_reg", "val_recon", "train_grad_norm", "lr"} <= set(rows[0])
    assert {"train_pred_visual", "train_pred_proprio", "val_pred_visual", "val_pred_proprio"} <= set(rows[2])
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "latest.pt").is_file()

    # The monitor splits a train/val gap with the logged weights: they must be the ones each total used.
    for row in rows:
        for split in ("train", "val"):
            weights = row["loss_weights"][split]
            assert sum(w * row[f"{split}_{k}"] for k, w in weights.items()) == pytest.approx(row[f"{split}_loss"],
                                                                                            rel=1e-5)
    assert rows[-1]["loss_weights"]["val"]["pred_proprio"] == 0.5
    gap = decompose_gap(split_phases(rows)["predictor"])
    assert gap.weights["train"].source == "logged" and gap.not_shared == {}  # the same loss on both splits
    assert gap.same_loss_gap == pytest.approx(rows[-1]["val_loss"] - rows[-1]["train_loss"], rel=1e-6)


def test_snapshots_keep_the_predictor_of_every_nth_epoch_as_a_servable_model(dataset, tmp_path):
    snap = PhaseConfig(**{**PHASE.__dict__, "epochs": 3, "snapshot_every": 2})
    Trainer(config(dataset, tmp_path, encoder=snap, predictor=snap), progress=False).run()
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["predictor-002.pt"]  # encoders are not servable
    model = load_model(tmp_path / "snapshots" / "predictor-002.pt")
    assert model.metadata["predictor_epoch"] == 2
    final = torch.load(tmp_path / "latest.pt", weights_only=True)["model"]  # after epoch 3: other weights
    snapshot = weights(tmp_path / "snapshots" / "predictor-002.pt")
    assert any(not torch.equal(snapshot[k], final[k]) for k in snapshot)
    with pytest.raises(ValueError, match="snapshot_every=-1"):
        PhaseConfig(snapshot_every=-1)


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


def scripted_val(trainer, curves):
    """Validation losses by (phase, epoch) instead of measured ones: the best epoch is known in advance."""
    trainer._validate = lambda phase, pc: {"loss": curves[phase][trainer.state.epoch]}


def first_step_weights(trainer):
    """The weights (model, decoder) at the first training step of this run, before it changes them."""
    seen, real = {}, trainer._losses

    def losses(phase, rows):
        if not seen:
            seen.update({f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()})
            seen.update({f"decoder.{k}": v.clone() for k, v in trainer.decoder.state_dict().items()})
            seen["phase"], seen["epoch"] = phase, trainer.state.epoch
        return real(phase, rows)

    trainer._losses = losses
    return seen


def test_resume_from_best_rolls_the_predictor_back_to_its_best_epoch_at_a_new_lr(dataset, tmp_path):
    cfg = config(dataset, tmp_path, encoder=replace(PHASE, epochs=1), predictor=replace(PHASE, epochs=4))
    first = Trainer(cfg, progress=False)
    scripted_val(first, {"encoder": [0.1], "predictor": [0.1, 0.05, 0.07, 0.09]})  # best: predictor epoch 2
    assert first.run().status == "max_epochs"
    best = weights(tmp_path / "best.pt")
    log_before = (tmp_path / "metrics.jsonl").read_text()

    again = Trainer(cfg, progress=False)
    scripted_val(again, {"predictor": [None, None, 0.04, 0.03]})
    start = first_step_weights(again)
    state = again.run(resume="best", lr=1e-4)
    assert (start["phase"], start["epoch"]) == ("predictor", 2)
    for k, v in best.items():
        torch.testing.assert_close(start[f"model.{k}"], v, rtol=0, atol=0, msg=k)
    assert state.status == "max_epochs" and state.best_val == 0.03 and state.best_epoch == 4
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("encoder", 1)] + [("predictor", e) for e in range(1, 5)]
    assert [r["lr"] for r in rows[3:]] == [1e-4, 1e-4] and [r["val_loss"] for r in rows[3:]] == [0.04, 0.03]
    assert (tmp_path / "metrics.before-best-1.jsonl").read_text() == log_before  # the abandoned epochs kept
    assert json.loads((tmp_path / "config.json").read_text())["predictor"]["lr"] == 1e-4
    assert load_model(tmp_path / "model.pt").metadata["predictor_epoch"] == 4


def test_resume_from_best_in_the_encoder_phase_restores_encoder_and_decoder(dataset, tmp_path):
    cfg = config(dataset, tmp_path, encoder=replace(PHASE, epochs=3), predictor=replace(PHASE, epochs=1))
    first = Trainer(cfg, progress=False)
    scripted_val(first, {"encoder": [0.1, 0.05, 0.08], "predictor": [0.1]})
    steps = []

    def stop_in_epoch_3(trainer):
        steps.append(1)
        if len(steps) == 7:  # 3 steps per epoch: the first step of encoder epoch 3
            os.kill(os.getpid(), signal.SIGINT)

    first.on_step = stop_in_epoch_3
    assert first.run().status == "interrupted"
    saved = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert saved["state"]["best_epoch"] == 2

    again = Trainer(cfg, progress=False)
    scripted_val(again, {"encoder": [None, None, 0.09], "predictor": [0.1]})
    start = first_step_weights(again)
    again.run(resume="best")
    assert (start["phase"], start["epoch"]) == ("encoder", 2)
    for k, v in saved["best_encoder"].items():
        torch.testing.assert_close(start[f"model.encoder.{k}"], v, rtol=0, atol=0, msg=k)
    for k, v in saved["best_decoder"].items():
        torch.testing.assert_close(start[f"decoder.{k}"], v, rtol=0, atol=0, msg=k)


def test_resume_errors_are_clear(dataset, tmp_path, capsys):
    from training.__main__ import main
    from training.trainer import ResumeError

    trainer = Trainer(config(dataset, tmp_path), progress=False)
    with pytest.raises(ResumeError, match="latest.pt"):
        trainer.run(resume="best")
    with pytest.raises(ResumeError, match="lr=0.001"):
        trainer.run(resume="latest", lr=1e-3)
    (tmp_path / "c.json").write_text(json.dumps({"dataset": str(dataset), "out": str(tmp_path)}))
    assert main(["--config", str(tmp_path / "c.json"), "--lr", "1e-4"]) == 2
    assert "--lr 0.0001 needs --resume best" in capsys.readouterr().err
