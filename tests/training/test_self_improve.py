"""Self-improvement on the wall with the shipped wall model: the collected data is a valid dataset of what was
executed, the union holds the base and the new episodes, a round fine-tunes from the current model, and a
resumed run skips what is finished.

A tiny planner and a two-step training schedule keep a round to seconds; everything else is the real thing
(the closed loop, the dataset writer and reader, the trainer).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.collect import CollectConfig, collect
from envs.dataset import load_dataset
from envs.episodes import wall_episodes
from envs.wall import WallEnv
from models import DEFAULT_MODEL_PATH, load_model
from models.artifact import read_artifact
from server.local import LocalClient
from training import self_improve
from training.config import TrainConfig
from training.self_improve import SelfImproveConfig
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY_PLANNER = {"cem": {"samples": 16, "elites": 4}, "max_iterations": 3, "min_iterations": 1, "horizon": 2}
SHORT = {"predictor": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 8, "val_batches": 1, "warmup_steps": 1}}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "wall"
    collect(path, CollectConfig(episodes=6, steps=20, seed=0), progress=False)
    return path


def si_config(base, out, **kw):
    return SelfImproveConfig(config=str(ROOT / "configs" / "wall.json"), model=str(DEFAULT_MODEL_PATH), out=str(out),
                             dataset=str(base), episodes=kw.pop("episodes", 3), chunk=kw.pop("chunk", 2),
                             budget=3, planner=TINY_PLANNER, overrides=SHORT, **kw)


def test_a_recorded_episode_is_the_trajectory_that_was_executed():
    client = LocalClient(load_model(DEFAULT_MODEL_PATH))
    result = next(wall_episodes(client, 1, seed=20_000, goals="near", planner=TINY_PLANNER, budget=2, record=True))
    ep = result.trajectory
    frameskip = 5
    assert ep.length == result.steps * frameskip + 1
    np.testing.assert_allclose(ep.states[0], result.task.start)
    np.testing.assert_allclose(ep.states[-1], result.final_state)
    assert not ep.actions[-1].any()
    env = WallEnv()  # replaying the recorded actions from the recorded start gives the recorded states and frames
    env.reset(state=ep.states[0])
    for t in range(ep.length - 1):
        np.testing.assert_array_equal(env.render(), ep.frames[t])
        np.testing.assert_allclose(env.proprio(), ep.proprio[t], rtol=1e-6)
        env.step(ep.actions[t])
        np.testing.assert_allclose(env.get_state(), ep.states[t + 1])


def test_a_round_writes_valid_chunks_a_union_of_both_and_a_fine_tuned_model(base, tmp_path):
    ledger = self_improve.run(si_config(base, tmp_path), progress=False)
    assert [r["stage"] for r in ledger] == ["collect", "data", "train"]
    chunks = [load_dataset(tmp_path / "round-01" / "chunks" / c) for c in ("000", "001")]
    assert [c.num_episodes for c in chunks] == [2, 1]
    assert all(c.meta["env"] == "wall" and c.states is not None and c.meta["seed"] >= self_improve.TRAIN_SEEDS
               for c in chunks)
    assert ledger[0]["episodes"] == 3 and ledger[0]["frames"] == sum(c.num_frames for c in chunks)
    assert ledger[0]["successes"] == sum(sum(c.meta["self_improve"]["success"]) for c in chunks)

    data, b = load_dataset(tmp_path / "round-01" / "data"), load_dataset(base)
    assert data.num_episodes == b.num_episodes + 3
    assert data.num_frames == b.num_frames + sum(c.num_frames for c in chunks)
    np.testing.assert_array_equal(data.episode(0).frames, b.episode(0).frames)
    last = chunks[1].episode(0)
    np.testing.assert_array_equal(data.episode(data.num_episodes - 1).frames, last.frames)
    np.testing.assert_array_equal(data.episode(data.num_episodes - 1).states, last.states)

    art, shipped = read_artifact(tmp_path / "round-01" / "train" / "model.pt"), read_artifact(DEFAULT_MODEL_PATH)
    assert art["metadata"]["init_from"] == str(DEFAULT_MODEL_PATH)
    for k in ("action_mean", "action_std", "proprio_mean", "proprio_std"):  # the base's action space, not the union's
        assert torch.equal(torch.as_tensor(art["stats"][k]), torch.as_tensor(shipped["stats"][k])), k
    enc = [k for k in shipped["state_dict"] if k.startswith("encoder.")]
    pred = [k for k in shipped["state_dict"] if k.startswith("predictor.")]
    assert enc and all(torch.equal(art["state_dict"][k], shipped["state_dict"][k]) for k in enc)  # frozen
    assert any(not torch.equal(art["state_dict"][k], shipped["state_dict"][k]) for k in pred)  # fine-tuned


def test_a_resumed_run_skips_finished_chunks_and_stages(base, tmp_path):
    cfg = si_config(base, tmp_path, episodes=4)
    self_improve.collect_round(cfg.model, "wall", cfg, 1, tmp_path, progress=False)
    chunks = tmp_path / "round-01" / "chunks"
    kept = (chunks / "000" / "frames.npy").stat()
    lost = load_dataset(chunks / "001")
    import shutil

    shutil.rmtree(chunks / "001")  # as if the job was killed while collecting chunk 1
    summary = self_improve.collect_round(cfg.model, "wall", cfg, 1, tmp_path, progress=False)
    assert (chunks / "000" / "frames.npy").stat().st_mtime_ns == kept.st_mtime_ns
    again = load_dataset(chunks / "001")
    np.testing.assert_array_equal(again.states, lost.states)  # the same tasks and plans: seeded per chunk
    assert summary["episodes"] == 4

    ledger = self_improve.run(cfg, progress=False)
    model = tmp_path / "round-01" / "train" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert [r["stage"] for r in self_improve.run(cfg, progress=False)] == [r["stage"] for r in ledger]
    assert model.stat().st_mtime_ns == stamp  # a finished round is not redone
    two = self_improve.run(SelfImproveConfig(**{**cfg.__dict__, "rounds": 2}), progress=False)
    assert [(r["round"], r["stage"]) for r in two][-3:] == [(2, "collect"), (2, "data"), (2, "train")]
    assert two[3]["collected_by"] == str(model)  # round 2 plans with round 1's model
    union = load_dataset(tmp_path / "round-02" / "data")
    assert union.num_episodes == load_dataset(base).num_episodes + 8  # both rounds' episodes


def test_self_improvement_never_draws_evaluation_seeds(base, tmp_path):
    with pytest.raises(ValueError, match="seeds start at"):
        si_config(base, tmp_path, seed=1000)
    with pytest.raises(ValueError, match="eval_seed"):
        si_config(base, tmp_path, eval_episodes=5, eval_seed=self_improve.TRAIN_SEEDS)


def test_init_from_refuses_a_model_of_another_architecture(base, tmp_path):
    d = TrainConfig.load(ROOT / "configs" / "wall.json").to_dict()
    d.update(dataset=str(base), out=str(tmp_path), init_from=str(DEFAULT_MODEL_PATH))
    d["model"]["depth"] += 1
    with pytest.raises(ValueError, match="depth"):
        Trainer(TrainConfig.from_dict(d), progress=False)


def test_init_partial_keeps_the_matching_weights_and_starts_the_rest_fresh(base, tmp_path):
    d = TrainConfig.load(ROOT / "configs" / "wall.json").to_dict()
    d.update(dataset=str(base), out=str(tmp_path), init_from=str(DEFAULT_MODEL_PATH), init_partial=True)
    d["model"]["num_hist"] += 1  # a longer history: a longer position embedding, every other weight as it was
    d["encoder"]["epochs"] = 0
    trainer = Trainer(TrainConfig.from_dict(d), progress=False)
    shipped = read_artifact(DEFAULT_MODEL_PATH)["state_dict"]
    assert trainer.reinitialised == ["predictor.pos_embedding"]
    own = trainer.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in shipped.items() if k != "predictor.pos_embedding")
    d["model"]["encoder_dim"] += 1  # now the encoder cannot come from the artifact, and would never train
    with pytest.raises(ValueError, match="encoder would stay random"):
        Trainer(TrainConfig.from_dict(d), progress=False)


def test_repeat_weighs_the_planned_episodes_up_in_the_union(base, tmp_path):
    cfg = si_config(base, tmp_path, episodes=2, repeat=3)
    self_improve.collect_round(cfg.model, "wall", cfg, 1, tmp_path, progress=False)
    part = tmp_path / "round-01" / "chunks" / "000"
    summary = self_improve.union(base, [part], tmp_path / "u", repeat=3)
    u, b, p = load_dataset(tmp_path / "u"), load_dataset(base), load_dataset(part)
    assert u.num_episodes == b.num_episodes + 3 * p.num_episodes and summary["repeat"] == 3
    for k in range(3):
        np.testing.assert_array_equal(u.episode(b.num_episodes + k * p.num_episodes + 1).frames, p.episode(1).frames)


def test_the_command_line_runs_a_round_and_refuses_evaluation_seeds(base, tmp_path, capsys):
    args = ["--config", str(ROOT / "configs" / "wall.json"), "--model", str(DEFAULT_MODEL_PATH), "--out", str(tmp_path),
            "--dataset", str(base), "--episodes", "2", "--chunk", "1", "--budget", "2",
            "--planner", json.dumps(TINY_PLANNER), "--overrides", json.dumps(SHORT), "--repeat", "2"]
    assert self_improve.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["stage"] for r in rows] == ["collect", "data", "train"] and rows[1]["repeat"] == 2
    assert (tmp_path / "self_improve.jsonl").read_text().count("\n") == 3
    assert self_improve.main([*args, "--seed", "3"]) == 2
    assert "seeds start at" in capsys.readouterr().err
