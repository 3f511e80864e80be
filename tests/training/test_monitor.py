"""The monitor on synthetic metrics logs, one crafted per failure pattern.

Every log has two phases shaped like the trainer's (encoder: recon +
latent_reg; predictor: pred_visual + pred_proprio); the pattern lives in one
phase and the other is healthy, so each test also checks that a phase change
is not read as a problem and that findings name the right phase.
"""

import json
import logging
import math

import numpy as np
import pytest

from training import monitor
from training.diagnose import Thresholds, diagnose, new_findings, rolling_rel_std, sign_changes

N = 30  # epochs per phase


def smooth(n=N, start=0.3, floor=0.02, tau=8.0, seed=0, noise=0.002):
    """A healthy exponential descent with a little multiplicative noise."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return (floor + (start - floor) * np.exp(-t / tau)) * (1 + noise * rng.standard_normal(n))


def phase_rows(phase, val, train=None, lr=1e-3, reg_share=0.01):
    train = np.asarray(val) * 1.1 if train is None else train
    lrs = np.broadcast_to(np.asarray(lr, dtype=float), (len(val),))
    rows = []
    for i, (v, tr, rate) in enumerate(zip(val, train, lrs)):
        row = {"phase": phase, "epoch": i + 1, "time": 1.7e9 + i, "epoch_seconds": 1.0, "lr": float(rate)}
        for split, loss in (("train", tr), ("val", v)):
            row[f"{split}_loss"] = float(loss)
            if phase == "encoder":
                row[f"{split}_recon"], row[f"{split}_latent_reg"] = (1 - reg_share) * loss, reg_share * loss
            else:
                row[f"{split}_pred_visual"], row[f"{split}_pred_proprio"] = 0.7 * loss, 0.3 * loss
        row["train_grad_norm"] = 0.5
        row["best_val"] = float(np.nanmin(val[:i + 1]))
        rows.append(row)
    return rows


def diverging():
    """Best at epoch 5, then 30 % worse every epoch for 6 epochs."""
    descent = smooth(n=5, start=0.16, floor=0.004, tau=2, seed=3)
    return np.concatenate([descent, descent[-1] * 1.3 ** np.arange(1, 7)])


def run_log(predictor_val=None, predictor_train=None, encoder_rows=None, **kw):
    enc = encoder_rows if encoder_rows is not None else phase_rows("encoder", smooth(seed=1))
    val = smooth(start=0.16, floor=0.004, seed=2) if predictor_val is None else predictor_val
    return enc + phase_rows("predictor", val, predictor_train, **kw)


def kinds(rows, thresholds=Thresholds()):
    return sorted((f.kind, f.phase) for f in diagnose(rows, thresholds))


# Diagnosis: each pattern is what it is, and nothing else -------------------------------------
def test_a_healthy_run_has_no_findings():
    assert diagnose(run_log()) == []


def test_a_run_diverging_after_an_early_best_is_divergence_with_restart_from_the_best():
    val = diverging()
    (f,) = diagnose(run_log(val, val * 1.1))
    assert (f.kind, f.phase, f.severity) == ("divergence", "predictor", "error")
    assert f.evidence["best_epoch"] == 5 and f.evidence["epochs"][0] == 5 and f.evidence["epochs"][-1] == 11
    assert "restart from the best checkpoint (epoch 5)" in f.recommendation and "learning rate" in f.recommendation


def test_an_oscillating_run_is_instability():
    val = smooth(start=0.16, floor=0.004, tau=12, seed=4) * (1 + 0.25 * (-1.0) ** np.arange(N))
    (f,) = diagnose(run_log(val, smooth(start=0.18, floor=0.005, tau=12, seed=5)))
    assert (f.kind, f.phase) == ("instability", "predictor")
    assert f.evidence["rolling_rel_std"] > 0.15 and f.evidence["sign_changes"] >= 2
    assert len(f.evidence["epochs"]) == len(f.evidence["values"]) == Thresholds().instability_window


def test_a_plateau_reports_the_epochs_spent_after_the_best():
    rng = np.random.default_rng(6)
    val = np.concatenate([smooth(n=10, start=0.16, floor=0.019, tau=2, seed=6),
                          np.full(25, 0.02) * (1 + 2e-4 * rng.standard_normal(25))])
    val[9] = 0.0195  # the best, at epoch 10; 25 flat epochs after it
    (f,) = diagnose(run_log(val))
    assert (f.kind, f.phase) == ("plateau", "predictor")
    assert f.evidence["best_epoch"] == 10 and f.evidence["epochs_since_best"] == 25
    assert "25 of 35 epochs" in f.message and f.recommendation.startswith("stop")


def test_a_plateau_after_learning_rate_cuts_recommends_stopping():
    val = np.concatenate([smooth(n=10, start=0.16, floor=0.019, tau=2, seed=6), np.full(12, 0.02)])
    val[9] = 0.0195
    lr = np.where(np.arange(22) < 14, 1e-3, 2.5e-4)
    (f,) = diagnose(run_log(val, lr=lr))
    assert f.kind == "plateau" and "cuts (0.001 -> 0.00025) did not help" in f.recommendation


def test_an_overfitting_run_is_overfitting_not_divergence():
    t = np.arange(N)
    train = 0.1 * np.exp(-t / 10)
    val = np.concatenate([smooth(n=15, start=0.12, floor=0.03, tau=4, seed=7), 0.0302 * 1.01 ** np.arange(1, 16)])
    (f,) = diagnose(run_log(val, train))
    assert (f.kind, f.phase) == ("overfitting", "predictor")
    assert f.evidence["gap"] > f.evidence["gap_at_best"]
    assert "keep the best checkpoint" in f.recommendation


def test_a_slowly_improving_run_is_slow_convergence():
    val = 0.1 * 0.9994 ** np.arange(40)  # 0.6 % per 10 epochs: new bests, but little progress
    (f,) = diagnose(run_log(val))
    assert (f.kind, f.phase) == ("slow_convergence", "predictor")
    assert 0 < f.evidence["improvement"] < Thresholds().slow_min_improvement


def test_nan_is_reported_once_with_its_epoch_and_fields():
    rows = run_log()
    for k in ("val_loss", "val_pred_visual"):
        rows[-1][k] = math.nan
    rows[-2]["train_grad_norm"] = math.inf
    (f,) = diagnose(rows)
    assert (f.kind, f.phase, f.severity) == ("non_finite", "predictor", "error")
    assert f.evidence["epochs"] == [N - 1, N, N] and f.evidence["best_epoch"] == N - 2  # before the first NaN/Inf
    assert f.evidence["fields"] == ["train_grad_norm", "val_loss", "val_pred_visual"]
    assert f.evidence["values"] == ["inf", "nan", "nan"] and "from epoch 29" in f.message
    json.dumps(f.to_dict(), allow_nan=False)  # strict JSON: NaN written as a string


def test_a_regularisation_dominated_total_reports_the_shares():
    recon = 0.005 + 0.1 * np.exp(-np.arange(N) / 8)
    enc = phase_rows("encoder", recon + 0.02)
    for r, rc in zip(enc, recon):
        for split, scale in (("train", 1.1), ("val", 1.0)):  # phase_rows' train loss is 1.1 x val
            r[f"{split}_recon"], r[f"{split}_latent_reg"] = scale * rc, scale * 0.02
    (f,) = diagnose(run_log(encoder_rows=enc))
    assert (f.kind, f.phase) == ("regularisation_dominated", "encoder")
    assert f.evidence["shares"]["latent_reg"] == pytest.approx(0.02 / (recon[-1] + 0.02))
    assert "latent_reg" in f.message and "recon" in f.recommendation


def test_thresholds_are_configurable_and_checked():
    flat = np.concatenate([smooth(n=10, start=0.16, floor=0.019, tau=2, seed=6), np.full(6, 0.02)])
    flat[9] = 0.0195
    assert kinds(run_log(flat)) == []  # 6 epochs after the best: not yet a plateau by default
    t = Thresholds.parse(["plateau_epochs=5", "regularisation_names=reg,kl"])
    assert t.plateau_epochs == 5 and t.regularisation_names == ("reg", "kl")
    assert kinds(run_log(flat), t) == [("plateau", "predictor")]
    with pytest.raises(ValueError, match="plateau_epoch="):
        Thresholds.parse(["plateau_epoch=5"])
    with pytest.raises(ValueError, match="instability_window=3"):
        Thresholds(instability_window=3)


def test_rolling_quantities_ignore_a_smooth_descent_and_catch_oscillation():
    slowing = 0.02 + 0.5 / np.arange(1, 13)  # fast, then slowing down: curved even in log space
    assert rolling_rel_std(slowing, 5).max() < 0.06 and sign_changes(slowing, 5).max() == 0
    zigzag = np.tile([1.0, 1.4], 6) * 0.9 ** np.arange(12)  # +-17 % about a falling trend
    assert (sign_changes(zigzag, 5) == 3).all() and (rolling_rel_std(zigzag, 5) > 0.15).all()


def test_new_findings_fire_once_the_epoch_a_problem_appears():
    val = diverging()
    rows = run_log(val, val * 1.1)
    fired = {}
    for i in range(1, len(rows) + 1):
        for f in new_findings(rows[:i]):
            fired.setdefault((f.kind, f.phase), []).append(rows[i - 1]["epoch"])
    assert fired == {("divergence", "predictor"): [8]}  # 3 rising epochs after the best at 5, +30 % each


# Reading, plotting, the CLI ---------------------------------------------------------------------
def write_log(path, rows, tail=""):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_a_truncated_last_line_is_ignored(tmp_path):
    rows = run_log()
    write_log(tmp_path, rows, tail=json.dumps(rows[-1])[:40])  # the trainer is mid-write
    assert monitor.read_metrics(tmp_path / "metrics.jsonl") == rows


def test_the_cli_writes_plots_and_a_diagnosis(tmp_path, capsys):
    rows = run_log(diverging())
    write_log(tmp_path / "run", rows)
    assert monitor.main([str(tmp_path / "run"), "--json"]) == 0
    out = tmp_path / "run" / "monitor"
    for phase in ("encoder", "predictor"):
        png = out / f"{phase}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    report = json.loads((out / "diagnosis.json").read_text())
    assert [(f["kind"], f["phase"]) for f in report["findings"]] == [("divergence", "predictor")]
    assert report["epochs"] == {"encoder": N, "predictor": 11}
    assert json.loads(capsys.readouterr().out) == report


def test_watch_refreshes_as_the_log_grows_and_stops_cleanly(tmp_path, monkeypatch, capsys):
    rows = phase_rows("predictor", smooth(seed=8))
    write_log(tmp_path, rows[:10])
    appended = iter(rows[10:12])

    def sleep(seconds):  # the trainer finishing an epoch while the monitor waits
        with open(tmp_path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(next(appended)) + "\n")

    monkeypatch.setattr(monitor.time, "sleep", sleep)
    assert monitor.main([str(tmp_path), "--watch", "--interval", "0", "--refreshes", "3", "--out",
                         str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "diagnosis.json").read_text())["epochs"] == {"predictor": 12}
    assert (tmp_path / "m" / "predictor.png").stat().st_size > 0

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(monitor.time, "sleep", interrupt)  # Ctrl-C while waiting for a run to start
    assert monitor.main([str(tmp_path / "not_yet"), "--watch"]) == 0
    assert "stopped" in capsys.readouterr().out


def test_a_missing_log_or_bad_threshold_is_a_clear_error(tmp_path, capsys):
    assert monitor.main([str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    write_log(tmp_path, run_log())
    assert monitor.main([str(tmp_path), "--threshold", "nope=1"]) == 2
    assert "nope=1" in capsys.readouterr().err


def test_the_trainer_warns_once_the_epoch_a_problem_appears(tmp_path, monkeypatch, caplog):
    from dataclasses import replace

    from envs.collect import CollectConfig, collect
    from tests.training.test_trainer import MODEL, PHASE
    from training.config import TrainConfig
    from training.trainer import Trainer

    collect(tmp_path / "data", CollectConfig(episodes=6, steps=10, seed=0), progress=False)
    cfg = TrainConfig(dataset=str(tmp_path / "data"), out=str(tmp_path / "run"), model=MODEL,
                      encoder=replace(PHASE, epochs=1, steps_per_epoch=1), predictor=replace(PHASE, epochs=6, steps_per_epoch=1))
    trainer = Trainer(cfg, progress=False)
    scripted = {"encoder": [0.1], "predictor": [0.1, 0.05, 0.06, 0.08, 0.1, 0.12]}  # best at 2, then rising
    monkeypatch.setattr(trainer, "_validate", lambda phase, pc: {"loss": scripted[phase][trainer.state.epoch]})
    with caplog.at_level(logging.WARNING, logger="training.trainer"):
        trainer.run()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # epoch 6 rises further: no repeat
    assert warnings[0].startswith(("predictor divergence at epoch 5", "predictor overfitting at epoch 5"))
