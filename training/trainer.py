"""World-model trainer: an autoencoder phase, then the predictor with teacher forcing.

Phase "encoder": the conv encoder and a pixel decoder learn to reconstruct
frames (plus a small latent L2 term that keeps the latent scale sane).
The best encoder is then frozen. Phase "predictor": visual latents of all
frames are encoded once; the predictor and the action embedding learn to
predict frames 1..num_hist from frames 0..num_hist-1 and their actions. The
proprio embedding stays at its random initialisation: an injective linear map
that a predictive loss could otherwise shrink to zero (collapse).

What overnight runs taught, all here: early stopping on validation loss,
ReduceLROnPlateau and warm-up, gradient clipping, NaN/divergence detection
that stops and keeps the best model, every loss component logged on its own,
`best` and `latest` written atomically every epoch, exact resume from
`latest` (weights, optimiser, scheduler, RNG, position inside the epoch),
Ctrl-C / SIGTERM save `latest` before exiting, metrics in JSONL, a progress bar.

Resuming from `best` (`run(resume="best", lr=...)`) rolls the current phase
back to its best epoch: the best weights, the epoch counter and the history
as they were then, a fresh optimiser and scheduler, optionally at a new
learning rate (a fine-tune). It is not an exact replay (the optimiser state
at the best epoch is not kept); the abandoned epochs' metrics are archived.

Run folder:
    latest.pt       training state (weights-only loadable), for --resume; it
                    also holds the encoder phase's best encoder and decoder
    best.pt         the best model so far as a servable artifact (with stats)
    model.pt        the final model (= best), written when training ends
    metrics.jsonl   one JSON object per epoch, with each loss component and
                    its weight in the total (`loss_weights`)
    metrics.before-best-N.jsonl   the full log as it was before the Nth
                    resume from best
    config.json     the resolved training config
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from envs.dataset import load_dataset
from models import Latent, WorldModel, save_model
from models.artifact import atomic_torch_save
from training.config import PhaseConfig, TrainConfig
from training.data import compute_stats, gather_windows, split_episodes, window_starts
from training.decoder import Decoder
from training.diagnose import new_findings

log = logging.getLogger(__name__)
PHASES = ("encoder", "predictor")
LATENT_REG = 1e-3  # weight of the latent L2 term in the autoencoder phase
# The agent covers ~0.7 % of a wall frame: a plain pixel MSE is minimised by
# drawing the static room and no agent. Pixels that differ from the static
# background (per-pixel median of training frames) weigh this much more.
FOREGROUND_WEIGHT = 20.0
FOREGROUND_THRESHOLD = 0.1  # in normalised pixel units ([-1, 1] range)


class ResumeError(ValueError):
    """A resume that cannot happen as asked (no latest.pt, no best epoch yet, a bad lr)."""


@dataclass
class State:
    """Everything `latest.pt` needs for an exact resume (plain types only)."""

    phase: str = "encoder"
    epoch: int = 0  # completed epochs of this phase
    epoch_step: int = 0  # completed steps of the current epoch
    global_step: int = 0  # steps of this phase, for warm-up
    epoch_sums: dict[str, float] = field(default_factory=dict)
    best_val: float = math.inf
    best_epoch: int = 0  # epoch of best_val (0: none yet)
    bad_epochs: int = 0
    status: str = "running"  # running | early_stopped | max_epochs | diverged | interrupted | done
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self.ds = load_dataset(cfg.dataset)
        self.split = split_episodes(self.ds.num_episodes, cfg.val_fraction, cfg.seed)
        self.stats = compute_stats(self.ds, self.split, dataset_name=str(cfg.dataset))
        torch.manual_seed(cfg.seed)
        self.model = WorldModel(cfg.model, self.stats)
        self.decoder = Decoder(cfg.model)
        if self.model.proprio_encoder is not None:
            self.model.proprio_encoder.requires_grad_(False)  # fixed injective map: cannot collapse
        c = cfg.model
        self.train_frames = self._rows(self.split.train)
        self.val_frames = self._rows(self.split.val)
        self.train_windows = window_starts(self.ds, self.split.train, c.num_hist, c.frameskip)
        self.val_windows = window_starts(self.ds, self.split.val, c.num_hist, c.frameskip)
        if len(self.train_windows) == 0 or len(self.val_windows) == 0:
            raise ValueError(f"episodes are too short for windows of {c.num_hist} model steps x frameskip "
                             f"{c.frameskip}: need more than {c.num_hist * c.frameskip} frames per episode")
        self.state = State()
        self.stop_requested = False
        self.latents: torch.Tensor | None = None  # (N, P, Dv) frozen-encoder features, predictor phase
        sample = np.random.default_rng(cfg.seed).choice(self.train_frames, size=min(512, len(self.train_frames)),
                                                        replace=False)
        self.background = self._frames(sample).median(dim=0, keepdim=True).values  # (1, 3, S, S)
        self.on_step: Callable[["Trainer"], None] | None = None  # test hook

    def _rows(self, episodes: np.ndarray) -> np.ndarray:
        return np.concatenate([np.arange(self.ds.episode_starts[e], self.ds.episode_starts[e] + self.ds.episode_lengths[e])
                               for e in episodes])

    # Batches ---------------------------------------------------------------------
    def _frames(self, rows: np.ndarray) -> torch.Tensor:
        order = np.argsort(rows)  # sorted reads are kinder to a memory map
        out = np.empty((len(rows), *self.ds.frames.shape[1:]), dtype=np.uint8)
        out[order] = self.ds.frames[rows[order]]
        return self.model.preprocess(torch.from_numpy(out))

    def _batch_rows(self, phase: str, epoch: int, step: int, val: bool = False) -> np.ndarray:
        """Rows of one batch; seeded by (seed, phase, epoch, step) so a resume redraws it exactly."""
        pc = self._phase_cfg(phase)
        pool = (self.val_frames if val else self.train_frames) if phase == "encoder" else (
            self.val_windows if val else self.train_windows)
        key = [self.cfg.seed, PHASES.index(phase), 1 if val else 0, 0 if val else epoch, step]
        return np.random.default_rng(key).choice(pool, size=pc.batch_size, replace=len(pool) < pc.batch_size)

    def _losses(self, phase: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
        if phase == "encoder":
            x = self._frames(rows)
            z = self.model.encoder(x)
            fg = (x - self.background).abs().amax(dim=1, keepdim=True) > FOREGROUND_THRESHOLD  # (B, 1, S, S)
            w = 1.0 + FOREGROUND_WEIGHT * fg
            recon = ((self.decoder(z) - x).square() * w).mean() / w.mean()
            reg = LATENT_REG * z.square().mean()
            return {"loss": recon + reg, "recon": recon, "latent_reg": reg}
        c = self.cfg.model
        frames, act_rows = gather_windows(rows, c.num_hist, c.frameskip)
        visual = self.latents[torch.from_numpy(frames)]  # (B, T+1, P, Dv)
        raw = torch.from_numpy(np.asarray(self.ds.actions[act_rows.reshape(-1)]))
        actions = self.model.codec.to_model(raw.view(len(rows), c.num_hist * c.frameskip, -1))  # (B, T, A)
        if self.model.proprio_encoder is not None:
            prop = torch.from_numpy(np.asarray(self.ds.proprio[frames.reshape(-1)])).view(*frames.shape, -1)
            pemb = self.model.proprio_encoder(self.model.codec.normalize_proprio(prop))  # (B, T+1, Ep)
        else:
            pemb = visual.new_zeros(*frames.shape, 0)
        pred = self.model.predict(Latent(visual[:, :-1], pemb[:, :-1]), actions)
        vis = F.mse_loss(pred.visual, visual[:, 1:])
        pro = F.mse_loss(pred.proprio, pemb[:, 1:]) if pemb.shape[-1] else vis.new_zeros(())
        return {"loss": vis + self.cfg.alpha * pro, "pred_visual": vis, "pred_proprio": pro}

    def _loss_weights(self, phase: str) -> dict[str, float]:
        """Weight of each logged component in the total `_losses` returns (the
        monitor splits a train/val gap into terms with these)."""
        return {"recon": 1.0, "latent_reg": 1.0} if phase == "encoder" else {"pred_visual": 1.0,
                                                                               "pred_proprio": self.cfg.alpha}

    # Phase machinery -------------------------------------------------------------
    def _phase_cfg(self, phase: str) -> PhaseConfig:
        return self.cfg.encoder if phase == "encoder" else self.cfg.predictor

    def _params(self, phase: str) -> list[torch.nn.Parameter]:
        mods = [self.model.encoder, self.decoder] if phase == "encoder" else [self.model.predictor, self.model.action_encoder]
        return [p for m in mods for p in m.parameters()]

    def _setup_phase(self, phase: str) -> None:
        pc = self._phase_cfg(phase)
        self.model.requires_grad_(False)
        for p in self._params(phase):
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(self._params(phase), lr=pc.lr, weight_decay=pc.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, factor=pc.lr_factor, patience=pc.lr_patience, min_lr=pc.min_lr)
        if phase == "predictor":
            self._encode_all()

    @torch.no_grad()
    def _encode_all(self) -> None:
        """Frozen-encoder latents of every frame, computed once for the predictor phase."""
        self.model.encoder.eval()
        n = self.ds.num_frames
        out = None
        for i in tqdm(range(0, n, 1024), desc="encode frames", disable=self._no_bar(), leave=False):
            z = self.model.encoder(self._frames(np.arange(i, min(n, i + 1024))))
            out = torch.empty(n, *z.shape[1:]) if out is None else out
            out[i:i + len(z)] = z
        self.latents = out

    def _no_bar(self) -> bool | None:
        return None if self.progress is None else not self.progress

    # Checkpoints -----------------------------------------------------------------
    def _save_latest(self) -> None:
        s = self.state
        payload = {"state": {k: getattr(s, k) for k in State.__dataclass_fields__},
                   "model": self.model.state_dict(), "decoder": self.decoder.state_dict(),
                   "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                   "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict()}
        for key in ("best_encoder", "best_decoder"):
            if getattr(self, key, None) is not None:
                payload[key] = getattr(self, key)
        atomic_torch_save(payload, self.out / "latest.pt")

    def _load_latest(self) -> None:
        payload = torch.load(self.out / "latest.pt", map_location="cpu", weights_only=True)
        self.state = State(**payload["state"])
        if self.state.status == "interrupted":
            self.state.status = "running"
        self.model.load_state_dict(payload["model"])
        self.decoder.load_state_dict(payload["decoder"])
        self.best_encoder = payload.get("best_encoder")
        self.best_decoder = payload.get("best_decoder")
        if self.state.phase in PHASES:
            self._setup_phase(self.state.phase)
            self.opt.load_state_dict(payload["optimizer"])
            self.sched.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
        log.info("resumed %s epoch %d step %d from %s", self.state.phase, self.state.epoch,
                 self.state.epoch_step, self.out / "latest.pt")

    def _load_best(self, lr: float | None) -> None:
        """Roll the phase in `latest.pt` back to its best epoch (a finished run: its predictor phase)."""
        path = self.out / "latest.pt"
        if not path.is_file():
            raise ResumeError(f"{path}: resuming from best needs the run's latest.pt (phase, best epoch)")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        s = self.state = State(**payload["state"])
        phase = s.phase if s.phase in PHASES else "predictor"
        self.model.load_state_dict(payload["model"])
        self.decoder.load_state_dict(payload["decoder"])
        self.best_encoder, self.best_decoder = payload.get("best_encoder"), payload.get("best_decoder")
        if phase == "encoder":
            if self.best_decoder is None or s.best_epoch == 0:
                raise ResumeError(f"{path}: no best encoder epoch recorded yet; resume from latest instead")
            self.model.encoder.load_state_dict(self.best_encoder)
            self.decoder.load_state_dict(self.best_decoder)
        else:
            if not (self.out / "best.pt").is_file():
                raise ResumeError(f"{self.out / 'best.pt'}: no best predictor epoch yet; resume from latest instead")
            best = torch.load(self.out / "best.pt", map_location="cpu", weights_only=True)
            self.model.load_state_dict(best["state_dict"])
            s.best_epoch = s.best_epoch or int(best["metadata"]["predictor_epoch"])  # logs older than best_epoch
        pc = self._phase_cfg(phase)
        if lr is not None:  # the new rate is the phase's rate from now on: warm-up, config.json, the logs
            pc = replace(pc, lr=lr)
            self.cfg = replace(self.cfg, **{phase: pc})
        abandoned = s.epoch - s.best_epoch
        s.phase, s.epoch, s.epoch_step, s.epoch_sums = phase, s.best_epoch, 0, {}
        s.global_step, s.bad_epochs, s.status = s.best_epoch * pc.steps_per_epoch, 0, "running"
        s.history = [r for r in s.history if r["phase"] != phase or r["epoch"] <= s.best_epoch]
        self._archive_metrics(phase, s.best_epoch)
        self._setup_phase(phase)  # a fresh optimiser and scheduler at pc.lr
        torch.set_rng_state(payload["torch_rng"])
        log.info("resumed %s from its best epoch %d (val %.5g; %d later epochs dropped) at lr %.2g", phase,
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

    def _save_best(self) -> None:
        self.state.best_epoch = self.state.epoch
        if self.state.phase == "encoder":
            self.best_encoder = {k: v.clone() for k, v in self.model.encoder.state_dict().items()}
            self.best_decoder = {k: v.clone() for k, v in self.decoder.state_dict().items()}
            return
        save_model(self.model, self.out / "best.pt", metadata=self._metadata())

    def _metadata(self) -> dict[str, Any]:
        return {"trained_by": "training.trainer", "dataset": str(self.cfg.dataset), "seed": self.cfg.seed,
                "best_val": self.state.best_val, "predictor_epoch": self.state.epoch,
                "planner": dict(self.cfg.planner)}

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
            self._setup_phase("encoder")
            self.best_encoder = self.best_decoder = None
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for sig in old:
                signal.signal(sig, self._request_stop)
        except ValueError:  # not the main thread: no signal handling
            old = {}
        try:
            while self.state.phase in PHASES and not self.stop_requested:
                self._run_phase(self.state.phase)
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

    def _run_phase(self, phase: str) -> None:
        pc, s = self._phase_cfg(phase), self.state
        while s.epoch < pc.epochs:
            self.model.train()
            self.decoder.train()
            bar = tqdm(total=pc.steps_per_epoch, initial=s.epoch_step, desc=f"{phase} {s.epoch + 1}/{pc.epochs}",
                       disable=self._no_bar(), leave=False)
            t0 = time.monotonic()
            while s.epoch_step < pc.steps_per_epoch:
                lr = pc.lr * min(1.0, (s.global_step + 1) / pc.warmup_steps) if s.global_step < pc.warmup_steps else None
                if lr is not None:
                    for g in self.opt.param_groups:
                        g["lr"] = lr
                losses = self._losses(phase, self._batch_rows(phase, s.epoch, s.epoch_step))
                if not torch.isfinite(losses["loss"]):
                    return self._diverged(f"non-finite training loss at epoch {s.epoch + 1} step {s.epoch_step}")
                self.opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                norm = torch.nn.utils.clip_grad_norm_(self._params(phase), pc.grad_clip if pc.grad_clip > 0 else math.inf)
                self.opt.step()
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
            if self._end_epoch(phase, pc, time.monotonic() - t0):
                break
        self._finish_phase(phase)

    @torch.no_grad()
    def _validate(self, phase: str, pc: PhaseConfig) -> dict[str, float]:
        self.model.eval()
        self.decoder.eval()
        sums: dict[str, float] = {}
        for i in range(pc.val_batches):
            for k, v in self._losses(phase, self._batch_rows(phase, 0, i, val=True)).items():
                sums[k] = sums.get(k, 0.0) + v.item()
        return {k: v / pc.val_batches for k, v in sums.items()}

    def _end_epoch(self, phase: str, pc: PhaseConfig, seconds: float) -> bool:
        """Validate, log, checkpoint; True when the phase should stop."""
        s = self.state
        train = {k: v / pc.steps_per_epoch for k, v in s.epoch_sums.items()}
        val = self._validate(phase, pc)
        s.epoch += 1
        s.epoch_step, s.epoch_sums = 0, {}
        self.sched.step(val["loss"])
        improved = val["loss"] < s.best_val * (1 - pc.min_delta)
        if math.isfinite(val["loss"]) and val["loss"] < s.best_val:
            s.best_val = val["loss"]
            self._save_best()
        s.bad_epochs = 0 if improved else s.bad_epochs + 1
        row = {"phase": phase, "epoch": s.epoch, "time": time.time(), "epoch_seconds": round(seconds, 3),
               "lr": self.opt.param_groups[0]["lr"], **{f"train_{k}": v for k, v in train.items()},
               **{f"val_{k}": v for k, v in val.items()}, "best_val": s.best_val,
               "loss_weights": {split: self._loss_weights(phase) for split in ("train", "val")}}
        s.history.append(row)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("%s epoch %d: train %.5g val %.5g (best %.5g) lr %.2g", phase, s.epoch, train["loss"],
                 val["loss"], s.best_val, row["lr"])
        for finding in new_findings(s.history):  # each problem logged once, the epoch it appears
            log.warning("%s %s at epoch %d: %s; %s", phase, finding.kind, s.epoch, finding.message,
                        finding.recommendation)
        stop = False
        if not math.isfinite(val["loss"]) or val["loss"] > pc.divergence_factor * s.best_val:
            self._diverged(f"validation loss {val['loss']:.4g} vs best {s.best_val:.4g} at epoch {s.epoch}")
            return True
        if s.bad_epochs >= pc.patience:
            log.info("%s: early stop after %d epochs without improvement", phase, s.bad_epochs)
            s.status, stop = "early_stopped", True
        self._save_latest()
        return stop

    def _diverged(self, why: str) -> None:
        log.error("diverged: %s; stopping and keeping the best checkpoint", why)
        self.state.status = "diverged"
        self._write_final()

    def _finish_phase(self, phase: str) -> None:
        s = self.state
        if phase == "predictor":
            if s.status == "running":
                s.status = "max_epochs"
            return self._write_final()
        if self.best_encoder is not None:
            self.model.encoder.load_state_dict(self.best_encoder)
        s.phase, s.epoch, s.epoch_step, s.global_step = "predictor", 0, 0, 0
        s.best_val, s.best_epoch, s.bad_epochs, s.epoch_sums, s.status = math.inf, 0, 0, {}, "running"
        self._setup_phase("predictor")
        self._save_latest()

    def _write_final(self) -> None:
        """End the run: model.pt = best.pt (the best predictor epoch), if there is one."""
        self.state.phase = "done"
        if (self.out / "best.pt").is_file():
            shutil.copyfile(self.out / "best.pt", self.out / "model.pt")
        else:
            log.error("no predictor epoch finished; no model written")
        self._save_latest()


def _after(line: str, phase: str, epoch: int) -> bool:
    """Whether a metrics line is a row of `phase` after `epoch`, or not a whole row (a write cut short)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return True
    return not line.endswith("\n") or (row.get("phase") == phase and int(row.get("epoch", 0)) > epoch)
