"""Training phases as objects: what a phase trains, on which batches, with which loss, and where its best is kept.

The trainer (training/trainer.py) runs the phases of `PHASES` in order with one
loop that knows no phase by name. A phase owns:

    parameters   the modules it trains; every other parameter is frozen while it runs
    optimiser    AdamW and ReduceLROnPlateau over those parameters, made with the
                 phase (made afresh only by a resume from best)
    batches      its train and val pools; a batch is seeded by (seed, phase key,
                 split, epoch, step) so that a resume redraws it exactly
    losses       the total "loss" and each component, and each component's weight
                 in the total (logged as `loss_weights` for the monitor)
    best         what it keeps when validation improves, what it adds to and reads
                 from latest.pt, how a resume from best rolls it back, and what it
                 hands on when it ends

Phase "encoder": the conv encoder and a pixel decoder learn to reconstruct
frames (plus a small latent L2 term that keeps the latent scale sane); its best
encoder and decoder are kept in memory and in latest.pt, and the best encoder
is frozen into the model when the phase ends. Phase "predictor": visual
latents of all frames are encoded once; the predictor and the action embedding
learn to predict frames 1..num_hist from frames 0..num_hist-1 and their
actions; its best is best.pt, a servable artifact. The proprio embedding stays
at its random initialisation: an injective linear map that a predictive loss
could otherwise shrink to zero (collapse).

Adding a phase: a subclass here with a new `key`, its place in `PHASES`, and a
PhaseConfig field of the same name in TrainConfig. The key is fixed per phase,
not its position, so that the other phases' batches (and old runs' resumes)
stay as they were.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from envs.dataset import TrajectoryDataset
from models import Latent, WorldModel, save_model
from training.config import PhaseConfig, TrainConfig
from training.data import Split, gather_windows, window_starts
from training.decoder import Decoder
from training.state import State

LATENT_REG = 1e-3  # weight of the latent L2 term in the autoencoder phase
# The agent covers ~0.7 % of a wall frame: a plain pixel MSE is minimised by
# drawing the static room and no agent. Pixels that differ from the static
# background (per-pixel median of training frames) weigh this much more.
FOREGROUND_WEIGHT = 20.0
FOREGROUND_THRESHOLD = 0.1  # in normalised pixel units ([-1, 1] range)


class ResumeError(ValueError):
    """A resume that cannot happen as asked (no latest.pt, no best epoch yet, a bad lr)."""


@dataclass
class Context:
    """What the phases share, built once by the Trainer. `cfg` is read for run-wide
    settings only (seed, alpha, dataset, planner); a phase's own settings are its `cfg`."""

    cfg: TrainConfig
    ds: TrajectoryDataset
    split: Split
    model: WorldModel
    decoder: Decoder
    out: Path
    progress: bool | None = None

    def rows(self, episodes: np.ndarray) -> np.ndarray:
        """Global frame rows of `episodes`."""
        return np.concatenate([np.arange(self.ds.episode_starts[e], self.ds.episode_starts[e] + self.ds.episode_lengths[e])
                               for e in episodes])

    def frames(self, rows: np.ndarray) -> torch.Tensor:
        """Preprocessed frames (B, 3, S, S) of `rows`."""
        order = np.argsort(rows)  # sorted reads are kinder to a memory map
        out = np.empty((len(rows), *self.ds.frames.shape[1:]), dtype=np.uint8)
        out[order] = self.ds.frames[rows[order]]
        return self.model.preprocess(torch.from_numpy(out))

    def no_bar(self) -> bool | None:
        return None if self.progress is None else not self.progress


class Phase(ABC):
    """One phase of training; a subclass says what it trains and how (see the module doc)."""

    name: ClassVar[str]
    key: ClassVar[int]  # batch seed key: fixed per phase, never reused
    servable: ClassVar[bool] = False  # yields a model the planner can serve (planning success is measurable)

    def __init__(self, ctx: Context, cfg: PhaseConfig, train_pool: np.ndarray, val_pool: np.ndarray) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.pools = {False: train_pool, True: val_pool}
        self.opt, self.sched = self._optimiser()

    @abstractmethod
    def modules(self) -> list[nn.Module]:
        """The modules this phase trains, in a fixed order (the optimiser state in latest.pt follows it)."""

    def params(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters()]

    def _optimiser(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
        pc = self.cfg
        opt = torch.optim.AdamW(self.params(), lr=pc.lr, weight_decay=pc.weight_decay)
        return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=pc.lr_factor, patience=pc.lr_patience,
                                                               min_lr=pc.min_lr)

    def start(self) -> None:
        """Make this phase's parameters the only trainable ones (a subclass adds what it precomputes)."""
        self.ctx.model.requires_grad_(False)
        for p in self.params():
            p.requires_grad_(True)

    def batch_rows(self, epoch: int, step: int, val: bool = False) -> np.ndarray:
        """Rows of one batch (frame rows or window starts); the val batches are the same every epoch."""
        pool, n = self.pools[val], self.cfg.batch_size
        key = [self.ctx.cfg.seed, self.key, 1 if val else 0, 0 if val else epoch, step]
        return np.random.default_rng(key).choice(pool, size=n, replace=len(pool) < n)

    @abstractmethod
    def losses(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """{"loss": the total, component: value} of the batch `rows` (scalars)."""

    @abstractmethod
    def loss_weights(self) -> dict[str, float]:
        """Weight of each component in the total `losses` returns."""

    # Best checkpoint ---------------------------------------------------------------
    @abstractmethod
    def save_best(self, state: State, metadata: Mapping[str, Any] | None = None) -> None:
        """Keep the current weights as the phase's best (state.best_epoch is the new best);
        `metadata`: how it was selected, for a servable artifact's metadata."""

    def checkpoint(self) -> dict[str, Any]:
        """Entries this phase adds to latest.pt (tensors and plain types only)."""
        return {}

    def save_snapshot(self, state: State, path: Path, metadata: Mapping[str, Any] | None = None) -> bool:
        """Write the model as it is now to `path` as a servable artifact (with `metadata`, e.g. this
        epoch's val loss); False if this phase has none."""
        return False

    def restore(self, payload: dict[str, Any]) -> None:
        """Read back what `checkpoint` wrote (older files may lack it)."""

    @abstractmethod
    def restore_best(self, state: State) -> None:
        """Put the phase's best weights back into the model (ResumeError if it has none);
        may fill state.best_epoch for files written before it was recorded."""

    def restart(self, lr: float | None = None) -> None:
        """A fresh optimiser and scheduler, at `lr` from now on if given (a resume from best)."""
        if lr is not None:
            self.cfg = replace(self.cfg, lr=lr)
        self.opt, self.sched = self._optimiser()

    def finish(self) -> None:
        """The phase has ended: hand its best on to the next phase."""


class EncoderPhase(Phase):
    name, key = "encoder", 0

    def __init__(self, ctx: Context, cfg: PhaseConfig) -> None:
        train, val = ctx.rows(ctx.split.train), ctx.rows(ctx.split.val)
        super().__init__(ctx, cfg, train, val)
        sample = np.random.default_rng(ctx.cfg.seed).choice(train, size=min(512, len(train)), replace=False)
        self.background = ctx.frames(sample).median(dim=0, keepdim=True).values  # (1, 3, S, S)
        self.best_encoder: dict[str, torch.Tensor] | None = None
        self.best_decoder: dict[str, torch.Tensor] | None = None

    def modules(self) -> list[nn.Module]:
        return [self.ctx.model.encoder, self.ctx.decoder]

    def losses(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        x = self.ctx.frames(rows)  # (B, 3, S, S)
        z = self.ctx.model.encoder(x)  # (B, P, Dv)
        fg = (x - self.background).abs().amax(dim=1, keepdim=True) > FOREGROUND_THRESHOLD  # (B, 1, S, S)
        w = 1.0 + FOREGROUND_WEIGHT * fg
        recon = ((self.ctx.decoder(z) - x).square() * w).mean() / w.mean()
        reg = LATENT_REG * z.square().mean()
        return {"loss": recon + reg, "recon": recon, "latent_reg": reg}

    def loss_weights(self) -> dict[str, float]:
        return {"recon": 1.0, "latent_reg": 1.0}  # LATENT_REG is inside the logged latent_reg

    def save_best(self, state: State, metadata: Mapping[str, Any] | None = None) -> None:
        self.best_encoder = {k: v.clone() for k, v in self.ctx.model.encoder.state_dict().items()}
        self.best_decoder = {k: v.clone() for k, v in self.ctx.decoder.state_dict().items()}

    def checkpoint(self) -> dict[str, Any]:
        # Kept after the phase ends too, as latest.pt always has (the record of the encoder
        # the predictor was trained on).
        return {k: v for k, v in (("best_encoder", self.best_encoder), ("best_decoder", self.best_decoder))
                if v is not None}

    def restore(self, payload: dict[str, Any]) -> None:
        self.best_encoder, self.best_decoder = payload.get("best_encoder"), payload.get("best_decoder")

    def restore_best(self, state: State) -> None:
        # The decoder too, or the phase would go on with a decoder from a later epoch; latest.pt
        # files written before resume-from-best existed kept only the encoder: those cannot.
        if self.best_encoder is None or self.best_decoder is None or state.best_epoch == 0:
            raise ResumeError(f"{self.ctx.out / 'latest.pt'}: no best encoder epoch recorded yet; "
                              "resume from latest instead")
        self.ctx.model.encoder.load_state_dict(self.best_encoder)
        self.ctx.decoder.load_state_dict(self.best_decoder)

    def finish(self) -> None:
        if self.best_encoder is not None:  # the predictor learns on the best encoder's latents
            self.ctx.model.encoder.load_state_dict(self.best_encoder)


class PredictorPhase(Phase):
    name, key, servable = "predictor", 1, True

    def __init__(self, ctx: Context, cfg: PhaseConfig) -> None:
        c = ctx.cfg.model
        train = window_starts(ctx.ds, ctx.split.train, c.num_hist, c.frameskip)
        val = window_starts(ctx.ds, ctx.split.val, c.num_hist, c.frameskip)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"episodes are too short for windows of {c.num_hist} model steps x frameskip "
                             f"{c.frameskip}: need more than {c.num_hist * c.frameskip} frames per episode")
        super().__init__(ctx, cfg, train, val)
        self.latents: torch.Tensor | None = None  # (N, P, Dv) frozen-encoder features of every frame

    def modules(self) -> list[nn.Module]:
        return [self.ctx.model.predictor, self.ctx.model.action_encoder]

    def start(self) -> None:
        super().start()
        self._encode_all()

    @torch.no_grad()
    def _encode_all(self) -> None:
        """Frozen-encoder latents of every frame, computed once: the encoder does not change in this phase."""
        encoder, n = self.ctx.model.encoder, self.ctx.ds.num_frames
        encoder.eval()
        out = None
        for i in tqdm(range(0, n, 1024), desc="encode frames", disable=self.ctx.no_bar(), leave=False):
            z = encoder(self.ctx.frames(np.arange(i, min(n, i + 1024))))
            out = torch.empty(n, *z.shape[1:]) if out is None else out
            out[i:i + len(z)] = z
        self.latents = out

    def losses(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        model, ds, c = self.ctx.model, self.ctx.ds, self.ctx.cfg.model
        frames, act_rows = gather_windows(rows, c.num_hist, c.frameskip)  # (B, T+1), (B, T, frameskip)
        visual = self.latents[torch.from_numpy(frames)]  # (B, T+1, P, Dv)
        raw = torch.from_numpy(np.asarray(ds.actions[act_rows.reshape(-1)]))
        actions = model.codec.to_model(raw.view(len(rows), c.num_hist * c.frameskip, -1))  # (B, T, A)
        if model.proprio_encoder is not None:
            prop = torch.from_numpy(np.asarray(ds.proprio[frames.reshape(-1)])).view(*frames.shape, -1)
            pemb = model.proprio_encoder(model.codec.normalize_proprio(prop))  # (B, T+1, Ep)
        else:
            pemb = visual.new_zeros(*frames.shape, 0)
        pred = model.predict(Latent(visual[:, :-1], pemb[:, :-1]), actions)
        vis = F.mse_loss(pred.visual, visual[:, 1:])
        pro = F.mse_loss(pred.proprio, pemb[:, 1:]) if pemb.shape[-1] else vis.new_zeros(())
        return {"loss": vis + self.ctx.cfg.alpha * pro, "pred_visual": vis, "pred_proprio": pro}

    def loss_weights(self) -> dict[str, float]:
        return {"pred_visual": 1.0, "pred_proprio": self.ctx.cfg.alpha}  # pred_proprio is logged unweighted

    def _metadata(self, state: State, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        cfg = self.ctx.cfg
        init = {"init_from": str(cfg.init_from), "init_partial": cfg.init_partial} if cfg.init_from else {}
        return {"trained_by": "training.trainer", "dataset": str(cfg.dataset), "env": self.ctx.ds.meta.get("env"),
                "seed": cfg.seed, "best_val": state.best_val, "predictor_epoch": state.epoch,
                "planner": dict(cfg.planner), **init, **(extra or {})}

    def save_best(self, state: State, metadata: Mapping[str, Any] | None = None) -> None:
        save_model(self.ctx.model, self.ctx.out / "best.pt", metadata=self._metadata(state, metadata))

    def save_snapshot(self, state: State, path: Path, metadata: Mapping[str, Any] | None = None) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(self.ctx.model, path, metadata=self._metadata(state, metadata))
        return True

    def restore_best(self, state: State) -> None:
        path = self.ctx.out / "best.pt"
        if not path.is_file():
            raise ResumeError(f"{path}: no best predictor epoch yet; resume from latest instead")
        best = torch.load(path, map_location="cpu", weights_only=True)
        self.ctx.model.load_state_dict(best["state_dict"])
        state.best_epoch = state.best_epoch or int(best["metadata"]["predictor_epoch"])  # files older than best_epoch


PHASES: tuple[type[Phase], ...] = (EncoderPhase, PredictorPhase)  # run in this order
