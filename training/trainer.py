"""World-model trainer: the phases of `training.phases.PHASES` in order (an
autoencoder phase, then the predictor with teacher forcing), one loop for all.

What a phase trains, its batches, losses and best checkpoint are the phase's
(training/phases.py); this file is the loop and the run folder, and knows no
phase by name. What overnight runs taught, all here: early stopping on
validation loss, ReduceLROnPlateau and warm-up, gradient clipping,
NaN/divergence detection that stops and keeps the best model, every loss
component logged on its own, `best` and `latest` written atomically every
epoch, exact resume from `latest` (weights, optimiser, scheduler, RNG,
position inside the epoch), Ctrl-C / SIGTERM save `latest` before exiting,
metrics in JSONL, a progress bar. With `planning_eval` on, closed-loop planning
success on fixed held-out tasks every N epochs of the servable phase, logged in
the epoch's row (training/planning_eval.py).

Resuming from `best` (`run(resume="best", lr=...)`) rolls the current phase
back to its best epoch: the best weights, the epoch counter and the history
as they were then, a fresh optimiser and scheduler, optionally at a new
learning rate (a fine-tune). It is not an exact replay (the optimiser state
at the best epoch is not kept); the abandoned epochs' metrics are archived.

Run folder:
    latest.pt       training state (weights-only loadable), for --resume; it
                    also holds the encoder phase's best encoder and decoder
    best.pt         the best model so far as a servable artifact (with stats):
                    the lowest val loss, or with select_best "planning_success"
                    the most successful measured epoch (its metadata says which)
    model.pt        the final model (= best), written when training ends
    metrics.jsonl   one JSON object per epoch, with each loss component and
                    its weight in the total (`loss_weights`)
    metrics.before-best-N.jsonl   the full log as it was before the Nth
                    resume from best
    config.json     the resolved training config
    snapshots/predictor-NNN.pt   the model after predictor epoch NNN, every
                    `snapshot_every` epochs (off by default)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from envs.dataset import load_dataset
from models import WorldModel
from models.artifact import atomic_torch_save
from training.config import PhaseConfig, TrainConfig
from training.data import compute_stats, split_episodes
from training.decoder import Decoder
from training import planning_eval
from training.diagnose import new_findings
from training.init_weights import load_init, read_init
from training.phases import PHASES, Context, Phase, ResumeError
from training.state import State

log = logging.getLogger(__name__)
__all__ = ["ResumeError", "Trainer"]


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self.ds = load_dataset(cfg.dataset)
        self.split = split_episodes(self.ds.num_episodes, cfg.val_fraction, cfg.seed)
        base = read_init(cfg) if cfg.init_from else None
        # A fine-tune keeps its base's statistics: its action embedding learned that normalised space.
        self.stats = base["stats"] if base else compute_stats(self.ds, self.split, dataset_name=str(cfg.dataset))
        torch.manual_seed(cfg.seed)
        self.model = WorldModel(cfg.model, self.stats)
        self.reinitialised: list[str] = []  # with init_partial: the weights that did not come from init_from
        if base:
            self.reinitialised = load_init(self.model, base["state_dict"], cfg)
        self.decoder = Decoder(cfg.model)
        if self.model.proprio_encoder is not None:
            self.model.proprio_encoder.requires_grad_(False)  # fixed injective map: cannot collapse
        ctx = Context(cfg, self.ds, self.split, self.model, self.decoder, self.out, progress)
        self.phases: dict[str, Phase] = {p.name: p(ctx, getattr(cfg, p.name)) for p in PHASES}
        self._check_planning_eval()
        self.phase = self.phases[PHASES[0].name]  # the phase whose optimiser latest.pt holds
        self.state = State(phase=PHASES[0].name)
        self.stop_requested = False
        self.on_step: Callable[["Trainer"], None] | None = None  # test hook
        self._last_val = math.nan  # the epoch's validation loss, for the planning check

    def _start(self, phase: Phase) -> None:
        self.phase = phase
        phase.start()

    # Seams: the loop computes every loss and validation through these two, so a
    # test can script them per phase name.
    def _losses(self, phase: str, rows: Any) -> dict[str, torch.Tensor]:
        return self.phases[phase].losses(rows)

    @torch.no_grad()
    def _validate(self, phase: str, pc: PhaseConfig) -> dict[str, float]:
        self.model.eval()
        self.decoder.eval()
        sums: dict[str, float] = {}
        for i in range(pc.val_batches):
            for k, v in self._losses(phase, self.phases[phase].batch_rows(0, i, val=True)).items():
                sums[k] = sums.get(k, 0.0) + v.item()
        return {k: v / pc.val_batches for k, v in sums.items()}

    def _planning_eval(self, phase: Phase) -> dict[str, Any] | None:
        """Closed-loop planning success of the model as it is now, in its metrics-row keys;
        None when not due this epoch (off, not every Nth epoch, or a phase with no servable model)."""
        pe = self.cfg.planning_eval
        if not (pe.enabled and phase.servable and self.state.epoch % pe.every == 0):
            return None
        if not math.isfinite(self._last_val):
            return None  # diverged weights: nothing to plan with (the epoch ends the run)
        result = planning_eval.evaluate(planning_eval.servable_copy(self.model, self.cfg.planner), pe,
                                        self.ds.meta["env"])
        return result.row()

    def _check_planning_eval(self) -> None:
        pe = self.cfg.planning_eval
        for phase in self.phases.values():
            if phase.cfg.select_best == "planning_success" and not phase.servable:
                raise ValueError(f"{phase.name}.select_best='planning_success': the {phase.name} phase yields no "
                                 "servable model to plan with; only a servable phase can")
        if pe.enabled:
            planning_eval.check(self.ds.meta["env"], pe)
            collected = self.ds.meta.get("seed")
            if collected is not None and collected == pe.seed:
                raise ValueError(f"planning_eval.seed={pe.seed} is the dataset's collection seed; pick another so "
                                 "that the evaluation tasks are held out")

    def _no_bar(self) -> bool | None:
        return None if self.progress is None else not self.progress

    # Checkpoints -----------------------------------------------------------------
    def _save_latest(self) -> None:
        s = self.state
        payload = {"state": {k: getattr(s, k) for k in State.__dataclass_fields__},
                   "model": self.model.state_dict(), "decoder": self.decoder.state_dict(),
                   "optimizer": self.phase.opt.state_dict(), "scheduler": self.phase.sched.state_dict(),
                   "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict()}
        for phase in self.phases.values():
            payload.update(phase.checkpoint())
        atomic_torch_save(payload, self.out / "latest.pt")

    def _read_latest(self) -> dict[str, Any]:
        """latest.pt's run state, model and decoder weights and each phase's entries, loaded into this trainer."""
        payload = torch.load(self.out / "latest.pt", map_location="cpu", weights_only=True)
        self.state = State(**payload["state"])
        self.model.load_state_dict(payload["model"])
        self.decoder.load_state_dict(payload["decoder"])
        for phase in self.phases.values():
            phase.restore(payload)
        return payload

    def _load_latest(self) -> None:
        payload = self._read_latest()
        if self.state.status == "interrupted":
            self.state.status = "running"
        if self.state.phase in self.phases:
            phase = self.phases[self.state.phase]
            self._start(phase)
            phase.opt.load_state_dict(payload["optimizer"])
            phase.sched.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
        log.info("resumed %s epoch %d step %d from %s", self.state.phase, self.state.epoch,
                 self.state.epoch_step, self.out / "latest.pt")

    def _load_best(self, lr: float | None) -> None:
        """Roll the phase in `latest.pt` back to its best epoch (a finished run: its last phase)."""
        path = self.out / "latest.pt"
        if not path.is_file():
            raise ResumeError(f"{path}: resuming from best needs the run's latest.pt (phase, best epoch)")
        payload = self._read_latest()
        s = self.state
        phase = self.phases.get(s.phase) or self.phases[PHASES[-1].name]
        phase.restore_best(s)
        phase.restart(lr)  # a fresh optimiser and scheduler at the phase's (new) rate
        self.cfg = replace(self.cfg, **{phase.name: phase.cfg})  # the new rate in config.json, warm-up, logs
        pc, abandoned = phase.cfg, s.epoch - s.best_epoch
        s.phase, s.epoch, s.epoch_step, s.epoch_sums = phase.name, s.best_epoch, 0, {}
        s.global_step, s.bad_epochs, s.status = s.best_epoch * pc.steps_per_epoch, 0, "running"
        s.history = [r for r in s.history if r["phase"] != phase.name or r["epoch"] <= s.best_epoch]
        # The lowest val loss may belong to a dropped epoch (select_best "planning_success").
        s.best_val = min((r["val_loss"] for r in s.history if r["phase"] == phase.name
                          and math.isfinite(r.get("val_loss", math.nan))), default=s.best_val)
        self._archive_metrics(phase.name, s.best_epoch)
        self._start(phase)
        torch.set_rng_state(payload["torch_rng"])
        log.info("resumed %s from its best epoch %d (val %.5g; %d later epochs dropped) at lr %.2g", phase.name,
                 s.best_epoch, s.best_val, abandoned, pc.lr)

    def _archive_metrics(self, phase: str, best_epoch: int) -> None:
        """Keep the full log as metrics.before-best-N.jsonl; metrics.jsonl loses the phase's rows after its best."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        n = 1
        while (self.out / f"metrics.before-best-{n}.jsonl").exists():
            n += 1
        shutil.copyfile(path, self.out / f"metrics.before-best-{n}.jsonl")
        kept = [line for line in path.read_text().splitlines(keepends=True) if not _after(line, phase, best_epoch)]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)

    # Main loop -------------------------------------------------------------------
    def run(self, resume: bool | str = False, lr: float | None = None) -> State:
        """resume: False (start fresh), True or "latest" (exact resume from
        latest.pt; fresh if there is none), or "best" (the current phase from
        its best epoch, at learning rate `lr` if given; see the module doc)."""
        mode = "latest" if resume is True else resume or None
        if mode not in (None, "latest", "best"):
            raise ValueError(f"resume={resume!r}: expected False, True, 'latest' or 'best'")
        if lr is not None and (mode != "best" or not lr > 0):
            raise ResumeError(f"lr={lr}: a new learning rate needs resume='best' and must be > 0 (resuming from "
                             "latest stays an exact resume)")
        self.out.mkdir(parents=True, exist_ok=True)
        if mode == "best":
            self._load_best(lr)
        elif mode == "latest" and (self.out / "latest.pt").is_file():
            self._load_latest()
        else:
            if mode:
                log.warning("no %s to resume; starting fresh", self.out / "latest.pt")
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            self._start(self.phases[self.state.phase])
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for sig in old:
                signal.signal(sig, self._request_stop)
        except ValueError:  # not the main thread: no signal handling
            old = {}
        try:
            while self.state.phase in self.phases and not self.stop_requested:
                self._run_phase(self.phases[self.state.phase])
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if self.stop_requested:
            self.state.status = "interrupted"
            self._save_latest()
            log.warning("interrupted: saved %s; continue with --resume", self.out / "latest.pt")
        return self.state

    def _request_stop(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: finishing this step, saving latest.pt, then exiting", signum)
        self.stop_requested = True

    def _run_phase(self, phase: Phase) -> None:
        pc, s = phase.cfg, self.state
        while s.epoch < pc.epochs:
            self.model.train()
            self.decoder.train()
            bar = tqdm(total=pc.steps_per_epoch, initial=s.epoch_step, desc=f"{phase.name} {s.epoch + 1}/{pc.epochs}",
                       disable=self._no_bar(), leave=False)
            t0 = time.monotonic()
            while s.epoch_step < pc.steps_per_epoch:
                lr = pc.lr * min(1.0, (s.global_step + 1) / pc.warmup_steps) if s.global_step < pc.warmup_steps else None
                if lr is not None:
                    for g in phase.opt.param_groups:
                        g["lr"] = lr
                losses = self._losses(phase.name, phase.batch_rows(s.epoch, s.epoch_step))
                if not torch.isfinite(losses["loss"]):
                    return self._diverged(f"non-finite training loss at epoch {s.epoch + 1} step {s.epoch_step}")
                phase.opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                norm = torch.nn.utils.clip_grad_norm_(phase.params(), pc.grad_clip if pc.grad_clip > 0 else math.inf)
                phase.opt.step()
                for k, v in {**{k: v.item() for k, v in losses.items()}, "grad_norm": float(norm)}.items():
                    s.epoch_sums[k] = s.epoch_sums.get(k, 0.0) + v
                s.epoch_step += 1
                s.global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss'].item():.4g}")
                if self.on_step is not None:
                    self.on_step(self)
                if self.stop_requested:
                    bar.close()
                    return
            bar.close()
            if self._end_epoch(phase, time.monotonic() - t0):
                break
        self._finish_phase(phase)

    def _end_epoch(self, phase: Phase, seconds: float) -> bool:
        """Validate, log, checkpoint; True when the phase should stop."""
        pc, s = phase.cfg, self.state
        train = {k: v / pc.steps_per_epoch for k, v in s.epoch_sums.items()}
        val = self._validate(phase.name, pc)
        s.epoch += 1
        s.epoch_step, s.epoch_sums = 0, {}
        phase.sched.step(val["loss"])
        self._last_val = val["loss"]
        planning = self._planning_eval(phase) or {}
        success = planning.get("planning_success")
        improved = val["loss"] < s.best_val * (1 - pc.min_delta)
        lowest = math.isfinite(val["loss"]) and val["loss"] < s.best_val
        if lowest:
            s.best_val = val["loss"]
        if self._is_best(pc, val["loss"], success, lowest):
            s.best_epoch, s.best_epoch_val, s.best_success = s.epoch, val["loss"], success
            phase.save_best(s, self._selection(pc, val["loss"], planning))
        if pc.snapshot_every and s.epoch % pc.snapshot_every == 0:
            phase.save_snapshot(s, self.out / "snapshots" / f"{phase.name}-{s.epoch:03d}.pt",
                                {"val_loss": val["loss"], **planning})
        s.bad_epochs = 0 if improved else s.bad_epochs + 1
        weights = phase.loss_weights()
        row = {"phase": phase.name, "epoch": s.epoch, "time": time.time(), "epoch_seconds": round(seconds, 3),
               "lr": phase.opt.param_groups[0]["lr"], **{f"train_{k}": v for k, v in train.items()},
               **{f"val_{k}": v for k, v in val.items()}, "best_val": s.best_val, **planning,
               "loss_weights": {split: dict(weights) for split in ("train", "val")}}
        s.history.append(row)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        shown = (f" planning success {success:.0%} ({planning['planning_episodes']} episodes, "
                 f"{planning['planning_seconds']:.0f} s)" if planning else "")
        log.info("%s epoch %d: train %.5g val %.5g (best %.5g) lr %.2g%s", phase.name, s.epoch, train["loss"],
                 val["loss"], s.best_val, row["lr"], shown)
        for finding in new_findings(s.history):  # each problem logged once, the epoch it appears
            log.warning("%s %s at epoch %d: %s; %s", phase.name, finding.kind, s.epoch, finding.message,
                        finding.recommendation)
        stop = False
        if not math.isfinite(val["loss"]) or val["loss"] > pc.divergence_factor * s.best_val:
            self._diverged(f"validation loss {val['loss']:.4g} vs best {s.best_val:.4g} at epoch {s.epoch}")
            return True
        if s.bad_epochs >= pc.patience:
            log.info("%s: early stop after %d epochs without improvement", phase.name, s.bad_epochs)
            s.status, stop = "early_stopped", True
        self._save_latest()
        return stop

    def _is_best(self, pc: PhaseConfig, val: float, success: float | None, lowest: bool) -> bool:
        """Whether this epoch replaces best.pt: the lowest val loss, or with select_best
        "planning_success" the highest measured success (ties: lower val loss); until the first
        measurement, the lowest val loss."""
        s = self.state
        if pc.select_best == "val_loss":
            return lowest
        if success is None:
            return lowest and s.best_success is None
        if not math.isfinite(val):
            return False
        return s.best_success is None or (success, -val) > (s.best_success, -s.best_epoch_val)

    def _selection(self, pc: PhaseConfig, val: float, planning: dict[str, Any]) -> dict[str, Any]:
        """How best.pt was chosen, for its metadata (and so model.pt's)."""
        by = pc.select_best if planning or pc.select_best == "val_loss" else "val_loss (no planning success yet)"
        out: dict[str, Any] = {"selected_by": by, "val_loss": val}
        if planning:
            out.update(planning)
            out["planning_eval"] = self.cfg.to_dict()["planning_eval"]
        return out

    def _diverged(self, why: str) -> None:
        log.error("diverged: %s; stopping and keeping the best checkpoint", why)
        self.state.status = "diverged"
        self._write_final()

    def _finish_phase(self, phase: Phase) -> None:
        phase.finish()
        names = list(self.phases)
        if phase.name == names[-1]:
            if self.state.status == "running":
                self.state.status = "max_epochs"
            return self._write_final()
        self.state = State(phase=names[names.index(phase.name) + 1], history=self.state.history)
        self._start(self.phases[self.state.phase])
        self._save_latest()

    def _write_final(self) -> None:
        """End the run: model.pt = best.pt (the last phase's best epoch), if there is one."""
        self.state.phase = "done"
        if (self.out / "best.pt").is_file():
            shutil.copyfile(self.out / "best.pt", self.out / "model.pt")
        else:
            log.error("no %s epoch finished; no model written", PHASES[-1].name)
        self._save_latest()


def _after(line: str, phase: str, epoch: int) -> bool:
    """Whether a metrics line is a row of `phase` after `epoch`, or not a whole row (a write cut short)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return True
    return not line.endswith("\n") or (row.get("phase") == phase and int(row.get("epoch", 0)) > epoch)
