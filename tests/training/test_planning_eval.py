"""Planning success during training: the hook's epochs and keys, its time bound, best-by-success, resume, the CLI.

Where only the trainer's bookkeeping is under test, the evaluator is scripted (success by epoch, as
tests/training/test_trainer.py scripts the validation curve); the hook, the bound and the CLI run the
real closed loop on the wall with a tiny model and a tiny planner.
"""

import json
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models import WorldModel, load_model
from models.artifact import read_artifact
from tests.training.test_trainer import MODEL, PHASE, config, dataset, scripted_val, weights  # noqa: F401 - fixture
from training import monitor, planning_eval
from training.config import PhaseConfig, PlanningEvalConfig, TrainConfig
from training.data import compute_stats, split_episodes
from training.trainer import Trainer

# A planner small enough that an episode of the tiny model takes a few hundredths of a second.
TINY_PLANNER = {"cem": {"samples": 16, "elites": 4}, "max_iterations": 3, "min_iterations": 1, "horizon": 2}
EVAL = PlanningEvalConfig(every=2, episodes=3, budget=3, planner=TINY_PLANNER)


def tiny_model(dataset):
    """A randomly initialised tiny model as the trainer would serve it."""
    from envs.dataset import load_dataset

    ds = load_dataset(dataset)
    torch.manual_seed(0)
    stats = compute_stats(ds, split_episodes(ds.num_episodes, 0.1, 0), str(dataset))
    return planning_eval.servable_copy(WorldModel(MODEL, stats), {})


def rows_of(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def scripted_success(monkeypatch, trainer, success, calls=None):
    """Planning success by predictor epoch instead of measured: the best epoch is known in advance."""

    def evaluate(model, cfg, env):
        epoch = trainer.state.epoch
        if calls is not None:
            calls.append(epoch)
        return planning_eval.PlanningEvalResult(success_rate=success[epoch], episodes=cfg.episodes,
                                                requested=cfg.episodes, seconds=0.01, mean_steps=2.0, env=env,
                                                tasks=cfg.tasks, seed=cfg.seed, budget=3)

    monkeypatch.setattr(planning_eval, "evaluate", evaluate)


def test_planning_eval_is_off_by_default_and_in_the_shipped_configs(dataset, tmp_path, monkeypatch):
    assert not TrainConfig(dataset="d", out="o").planning_eval.enabled
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in ("wall.json", "wall_tiny.json", "pusht.json"):
        assert not TrainConfig.load(configs / name).planning_eval.enabled, name

    def must_not_run(*args, **kwargs):
        raise AssertionError("planning evaluation ran while off")

    monkeypatch.setattr(planning_eval, "evaluate", must_not_run)
    Trainer(config(dataset, tmp_path), progress=False).run()
    assert not any(k.startswith("planning_") for r in rows_of(tmp_path) for k in r)
    assert load_model(tmp_path / "model.pt").metadata["selected_by"] == "val_loss"


def test_the_hook_runs_every_nth_predictor_epoch_and_logs_its_keys(dataset, tmp_path, caplog):
    predictor = replace(PHASE, epochs=4)
    cfg = config(dataset, tmp_path, predictor=predictor, planning_eval=replace(EVAL, every=2))
    with caplog.at_level(logging.INFO, logger="training.trainer"):
        Trainer(cfg, progress=False).run()
    measured = [(r["phase"], r["epoch"]) for r in rows_of(tmp_path) if "planning_success" in r]
    assert measured == [("predictor", 2), ("predictor", 4)]  # never the encoder: it yields no servable model
    for r in rows_of(tmp_path):
        if "planning_success" in r:
            assert 0.0 <= r["planning_success"] <= 1.0
            assert r["planning_episodes"] == 3 and r["planning_seconds"] > 0
            assert 1 <= r["planning_mean_steps"] <= 3  # the budget
            assert r["val_loss"] > 0  # beside the losses, in the same row
    lines = [m for m in caplog.messages if m.startswith("predictor epoch")]
    assert ["planning success" in m for m in lines] == [False, True, False, True]


def test_evaluation_tasks_are_fixed_and_the_time_bound_stops_it(dataset):
    model = tiny_model(dataset)
    cfg = replace(EVAL, episodes=4)
    first, again = planning_eval.evaluate(model, cfg, "wall"), planning_eval.evaluate(model, cfg, "wall")
    assert first.episodes == first.requested == 4
    assert (first.success_rate, first.mean_steps) == (again.success_rate, again.mean_steps)  # same tasks and seeds

    rng = torch.get_rng_state()
    bounded = planning_eval.evaluate(model, replace(cfg, max_seconds=1e-6), "wall")
    assert bounded.episodes == 1 and bounded.requested == 4  # the first episode always runs, then the bound
    assert torch.equal(torch.get_rng_state(), rng)  # the trainer's RNG is untouched (exact resume)


def scripted_run(dataset, out, monkeypatch, val, success, select_best, every=1):
    epochs = len(val)
    cfg = config(dataset, out, encoder=replace(PHASE, epochs=1),
                 predictor=replace(PHASE, epochs=epochs, select_best=select_best, patience=epochs),
                 planning_eval=replace(EVAL, every=every))
    trainer = Trainer(cfg, progress=False)
    scripted_val(trainer, {"encoder": [0.1], "predictor": val})
    calls = []
    scripted_success(monkeypatch, trainer, success, calls)
    state = trainer.run()
    return cfg, state, calls


def test_select_best_planning_success_keeps_the_most_successful_epoch(dataset, tmp_path, monkeypatch):
    val = [0.1, 0.05, 0.07, 0.09]  # lowest at 2
    success = {1: 0.2, 2: 0.5, 3: 0.9, 4: 0.9}  # highest at 3 and 4; 3 has the lower val loss
    _, state, calls = scripted_run(dataset, tmp_path / "success", monkeypatch, val, success, "planning_success")
    assert calls == [1, 2, 3, 4]
    meta = load_model(tmp_path / "success" / "model.pt").metadata
    assert (meta["predictor_epoch"], meta["selected_by"], meta["planning_success"]) == (3, "planning_success", 0.9)
    assert meta["val_loss"] == 0.07 and meta["planning_eval"]["episodes"] == EVAL.episodes
    assert (state.best_epoch, state.best_success, state.best_val) == (3, 0.9, 0.05)

    _, state, _ = scripted_run(dataset, tmp_path / "val", monkeypatch, val, success, "val_loss")
    meta = load_model(tmp_path / "val" / "model.pt").metadata
    assert (meta["predictor_epoch"], meta["selected_by"], meta["planning_success"]) == (2, "val_loss", 0.5)


def test_until_the_first_measurement_the_best_follows_the_val_loss(dataset, tmp_path, monkeypatch):
    val = [0.1, 0.2, 0.3, 0.05]  # epoch 1 is kept until epoch 2 is measured; epoch 3 is not measured
    success = {2: 0.4, 4: 0.3}
    _, _, calls = scripted_run(dataset, tmp_path / "short", monkeypatch, val[:1], success, "planning_success", every=2)
    meta = read_artifact(tmp_path / "short" / "model.pt")["metadata"]  # a run too short to measure still has a model
    assert calls == [] and (meta["predictor_epoch"], meta["selected_by"]) == (1, "val_loss (no planning success yet)")

    _, state, calls = scripted_run(dataset, tmp_path / "full", monkeypatch, val, success, "planning_success", every=2)
    assert calls == [2, 4]
    meta = read_artifact(tmp_path / "full" / "model.pt")["metadata"]
    assert (meta["predictor_epoch"], meta["planning_success"]) == (2, 0.4)  # 4 has the lowest loss, less success


def test_resume_from_best_rolls_back_to_the_most_successful_epoch(dataset, tmp_path, monkeypatch):
    val = [0.1, 0.05, 0.07, 0.09]
    cfg, _, _ = scripted_run(dataset, tmp_path, monkeypatch, val, {1: 0.1, 2: 0.2, 3: 0.8, 4: 0.3},
                             "planning_success")
    again = Trainer(cfg, progress=False)
    scripted_val(again, {"predictor": [None, None, None, 0.2]})
    scripted_success(monkeypatch, again, {4: 0.5})
    state = again.run(resume="best", lr=1e-4)
    rows = rows_of(tmp_path)
    assert [(r["phase"], r["epoch"]) for r in rows] == [("encoder", 1)] + [("predictor", e) for e in range(1, 5)]
    assert rows[-1]["planning_success"] == 0.5 and rows[-2]["planning_success"] == 0.8
    # the lowest val loss of the kept epochs (0.05 at 2), not of a dropped one
    assert state.best_val == 0.05 and state.best_epoch == 3
    assert load_model(tmp_path / "model.pt").metadata["predictor_epoch"] == 3


def test_exact_resume_with_planning_eval_on(dataset, tmp_path):
    """The evaluation draws its own randomness: an interrupted, resumed run ends with the same weights."""
    cfg = lambda out: config(dataset, out, planning_eval=replace(EVAL, every=1))  # noqa: E731
    Trainer(cfg(tmp_path / "straight"), progress=False).run()
    interrupted = Trainer(cfg(tmp_path / "resumed"), progress=False)
    steps = []

    def hook(trainer):
        steps.append(1)
        if len(steps) == 11:  # mid predictor epoch 2, after the epoch-1 evaluation
            os.kill(os.getpid(), signal.SIGINT)

    interrupted.on_step = hook
    assert interrupted.run().status == "interrupted"
    assert Trainer(cfg(tmp_path / "resumed"), progress=False).run(resume=True).status == "max_epochs"
    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    straight, resumed = rows_of(tmp_path / "straight"), rows_of(tmp_path / "resumed")
    assert [r["planning_success"] for r in straight if "planning_success" in r] == \
        [r["planning_success"] for r in resumed if "planning_success" in r]


def test_invalid_settings_are_refused_before_training(dataset, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="select_best='planning_success' needs planning_eval.every > 0"):
        config(dataset, tmp_path, predictor=replace(PHASE, select_best="planning_success"))
    with pytest.raises(ValueError, match="select_best='loss'"):
        PhaseConfig(select_best="loss")
    with pytest.raises(ValueError, match="encoder phase yields no servable model"):
        Trainer(config(dataset, tmp_path, encoder=replace(PHASE, select_best="planning_success"),
                       planning_eval=EVAL), progress=False)
    with pytest.raises(ValueError, match="planning_eval.seed=0 is the dataset's collection seed"):
        Trainer(config(dataset, tmp_path, planning_eval=replace(EVAL, seed=0)), progress=False)
    with pytest.raises(ValueError, match="planning_eval.tasks='middle'"):
        Trainer(config(dataset, tmp_path, planning_eval=replace(EVAL, tasks="middle")), progress=False)
    with pytest.raises(ValueError, match="nsamples"):
        PlanningEvalConfig(planner={"nsamples": 3})
    with pytest.raises(ValueError, match="max_seconds=0"):
        PlanningEvalConfig(max_seconds=0)
    with pytest.raises(ValueError, match="unknown keys \\['episode'\\]"):
        TrainConfig.from_dict({"dataset": "d", "out": "o", "planning_eval": {"episode": 3}})
    with pytest.raises(ValueError, match="no planning evaluation for env 'synthetic'"):
        planning_eval.suite("synthetic")
    monkeypatch.setitem(sys.modules, "gym_pusht", None)  # as if the pusht extra were not installed
    with pytest.raises(ValueError, match=r"pip install -e '.\[pusht\]'"):
        planning_eval.suite("pusht")


def test_cli_evaluates_an_artifact_and_every_snapshot_of_a_run(dataset, tmp_path, capsys):
    predictor = replace(PHASE, epochs=4, snapshot_every=2)
    Trainer(config(dataset, tmp_path, predictor=predictor), progress=False).run()
    args = ["--episodes", "2", "--budget", "2", "--planner", json.dumps(TINY_PLANNER)]
    assert planning_eval.main(["--model", str(tmp_path / "model.pt"), *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env"] == "wall" and summary["episodes"] == 2 and 0 <= summary["success_rate"] <= 1

    assert planning_eval.main(["--run", str(tmp_path), *args]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    written = [json.loads(line) for line in (tmp_path / "planning_eval.jsonl").read_text().splitlines()]
    assert printed == written and [r["epoch"] for r in written] == [2, 4]
    val = {r["epoch"]: r["val_loss"] for r in rows_of(tmp_path) if r["phase"] == "predictor"}
    assert [r["val_loss"] for r in written] == [val[2], val[4]]
    assert (tmp_path / "planning_eval.png").stat().st_size > 0

    assert planning_eval.main(["--run", str(tmp_path / "nowhere"), *args]) == 2
    assert "no snapshots" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["wall", "pusht"])
def test_shipped_artifacts_name_their_env_without_their_dataset(name):
    # A fresh clone has no data/: `planning_eval --model models/default/<name>.pt` must not need `--env`.
    artifact = Path(__file__).resolve().parents[2] / "models" / "default" / f"{name}.pt"
    metadata = read_artifact(artifact)["metadata"]
    assert planning_eval.artifact_env({**metadata, "dataset": "/nowhere"}) == name


def test_cli_plans_with_one_torch_thread_unless_told(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert planning_eval.main(["--run", str(tmp_path / "nowhere")]) == 2  # fails after setting the threads
        assert torch.get_num_threads() == 1
        with pytest.raises(SystemExit):
            planning_eval.main(["--run", str(tmp_path), "--threads", "0"])
        assert "--threads 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_monitor_plots_and_reports_planning_success(tmp_path):
    from tests.training.test_monitor import run_log

    rows = run_log()
    for r in rows:
        if r["phase"] == "predictor" and r["epoch"] % 5 == 0:
            r.update(planning_success=r["epoch"] / 40, planning_episodes=10)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = monitor.report(tmp_path, tmp_path / "m", monitor.Thresholds())
    p = result["planning"]["predictor"]
    assert p["epochs"] == [5, 10, 15, 20, 25, 30] and p["best"] == {"epoch": 30, "success": 0.75}
    assert "encoder" not in result["planning"]
    assert json.loads((tmp_path / "m" / "diagnosis.json").read_text())["planning"] == result["planning"]
    assert (tmp_path / "m" / "predictor.png").is_file()


def test_the_evaluation_is_the_shared_episode_runner_on_a_local_client(dataset):
    """One control loop: the evaluator's numbers are envs.episodes' on server.local.LocalClient."""
    from envs.episodes import wall_episodes, wall_summary
    from server.local import LocalClient

    model = tiny_model(dataset)
    cfg = replace(EVAL, episodes=3)
    ours = planning_eval.evaluate(model, cfg, "wall")
    with LocalClient(model) as client:
        theirs = wall_summary(list(wall_episodes(client, 3, cfg.seed, "near", planner=TINY_PLANNER, budget=3)),
                              "near", cfg.seed)
    assert (ours.success_rate, ours.mean_steps) == (theirs["success_rate"], theirs["mean_steps"])
    assert planning_eval.suite("wall").budgets == {"near": 10, "far": 40}
