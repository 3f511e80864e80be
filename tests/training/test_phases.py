"""Phases are objects the trainer's loop runs without knowing their names: adding one touches one place."""

import json
import os
import signal
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

import training.trainer
from tests.training.test_trainer import MODEL, PHASE, dataset, weights  # noqa: F401  (dataset: a fixture)
from training.config import PhaseConfig, TrainConfig
from training.phases import PHASES, PredictorPhase
from training.trainer import Trainer


def test_each_phase_has_its_own_config_field_and_batch_seed_key():
    assert [p.name for p in PHASES] == ["encoder", "predictor"]  # the run order
    assert {p.name for p in PHASES} <= {f.name for f in fields(TrainConfig)}
    assert len({p.key for p in PHASES}) == len(PHASES)


class FinetunePhase(PredictorPhase):
    """A third phase as a user would add it: the predictor again, on batches of its own."""

    name, key = "finetune", 2


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    finetune: PhaseConfig = PHASE


def test_a_third_phase_runs_logs_and_resumes_exactly_without_touching_the_loop(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(training.trainer, "PHASES", (*PHASES, FinetunePhase))
    one = replace(PHASE, epochs=1)

    def config(out):
        return FinetuneConfig(dataset=str(dataset), out=str(out), model=MODEL, encoder=one, predictor=one,
                              finetune=replace(PHASE, lr=3e-4))

    straight = Trainer(config(tmp_path / "straight"), progress=False)
    assert not np.array_equal(straight.phases["finetune"].batch_rows(0, 0), straight.phases["predictor"].batch_rows(0, 0))
    assert straight.run().status == "max_epochs"
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("encoder", 1), ("predictor", 1), ("finetune", 1),
                                                        ("finetune", 2)]
    assert rows[-1]["lr"] == 3e-4  # the phase's own config
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["finetune"]["lr"] == 3e-4

    interrupted = Trainer(config(tmp_path / "resumed"), progress=False)
    steps = []

    def stop_mid_finetune(trainer):
        steps.append(1)
        if len(steps) == 3 + 3 + 4:  # 3 steps per epoch: the first step of finetune epoch 2
            os.kill(os.getpid(), signal.SIGINT)

    interrupted.on_step = stop_mid_finetune
    assert interrupted.run().status == "interrupted"
    saved = torch.load(tmp_path / "resumed" / "latest.pt", weights_only=True)["state"]
    assert (saved["phase"], saved["epoch"], saved["epoch_step"]) == ("finetune", 1, 1)
    assert Trainer(config(tmp_path / "resumed"), progress=False).run(resume=True).status == "max_epochs"
    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "resumed" / "model.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
