"""Metrics logs shaped like the three training runs whose post-mortems the
monitor was built from (issue 15), with knobs for variations: noise seed,
length, a healthy phase before the incident. Numbers not given by the
post-mortems (the shape between the quoted epochs) are drawn at random; the
quoted ones are pinned. Rows have the trainer's fields (phase, epoch, lr,
train_/val_ totals and components, train_grad_norm, best_val).
"""

from __future__ import annotations

import numpy as np


def rows_from(phase, val, train, lr, components=None, start_epoch=1):
    """One row per epoch; `components`: {"train_x": array, "val_y": array, ...} extra fields,
    "loss_weights" a dict copied into every row."""
    components = dict(components or {})
    weights = components.pop("loss_weights", None)
    lrs = np.broadcast_to(np.asarray(lr, dtype=float), (len(val),))
    rows = []
    for i, (v, tr) in enumerate(zip(val, train)):
        row = {"phase": phase, "epoch": start_epoch + i, "time": 1.7e9 + i, "epoch_seconds": 60.0,
               "lr": float(lrs[i]), "train_loss": float(tr), "val_loss": float(v), "train_grad_norm": 0.5,
               "best_val": float(np.min(val[:i + 1]))}
        row.update({k: float(a[i]) for k, a in components.items()})
        if weights is not None:
            row["loss_weights"] = weights
        rows.append(row)
    return rows


def healthy_encoder(seed=0, noise=0.0):
    """The shipped wall model's encoder phase (docs/img/monitor_encoder.png, read off the plot), with its one
    bump at epoch 9; `noise` adds relative noise."""
    val = np.array([0.135, 0.064, 0.035, 0.022, 0.0185, 0.0155, 0.0125, 0.0118, 0.0128, 0.0108, 0.0105, 0.0102,
                    0.0098, 0.0097])
    train = np.array([0.29, 0.10, 0.048, 0.028, 0.019, 0.0155, 0.0133, 0.0125, 0.0118, 0.0113, 0.0108, 0.0103,
                      0.0100, 0.0099])
    val = val * (1 + noise * np.random.default_rng(seed).standard_normal(len(val)))
    reg = 1.4e-4 + 3e-4 * np.exp(-np.arange(len(val)) / 2)
    comps = {"train_recon": train - reg, "train_latent_reg": reg, "val_recon": val - reg, "val_latent_reg": reg}
    return rows_from("encoder", val, train, 2e-3, comps)


def healthy_predictor(seed=0, noise=0.0):
    """The shipped wall model's predictor phase (docs/img/monitor_predictor.png): val still improving at
    epoch 30, train 20 % below it by then."""
    val = np.array([0.019, 0.0122, 0.0085, 0.0065, 0.005, 0.004, 0.0034, 0.0029, 0.0025, 0.0022, 0.002, 0.0018,
                    0.0017, 0.0016, 0.0015, 0.0014, 0.00135, 0.0013, 0.00125, 0.0012, 0.00115, 0.0011, 0.00105,
                    0.001, 0.00097, 0.00094, 0.0009, 0.00087, 0.00083, 0.00081])
    train = np.array([0.15, 0.015, 0.0098, 0.0072, 0.0055, 0.0042, 0.0034, 0.0028, 0.0025, 0.0022, 0.0019, 0.0017,
                      0.00165, 0.0015, 0.0014, 0.00135, 0.0013, 0.0012, 0.00115, 0.0011, 0.00105, 0.001, 0.00095,
                      0.0009, 0.00085, 0.0008, 0.00076, 0.00072, 0.00068, 0.00065])
    val = val * (1 + noise * np.random.default_rng(seed).standard_normal(len(val)))
    comps = {"train_pred_visual": 0.85 * train, "train_pred_proprio": 0.15 * train,
             "val_pred_visual": 0.87 * val, "val_pred_proprio": 0.13 * val}
    return rows_from("predictor", val, train, 1e-3, comps)


def overnight(seed=0, epochs=389, best=277, phase="predictor", weights="logged"):
    """Incident 1: 5000 epochs configured, no early stopping, stopped by accident at 389. Best val 1.09 at
    277, then oscillating between 1.10 and 1.12. The training total adds 0.1 x reg plus a smoothness penalty
    the val loss lacks: ~1.1 recon + ~6.5 regularisation = ~7.6. `weights`: "logged" (the trainer's
    loss_weights), "fit" (reg logged unweighted, no weights: the monitor must recover the 0.1) or
    "weighted" (reg logged already times 0.1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs)
    val = 1.095 + 2.0 * np.exp(-t / 40) + 0.001 * rng.standard_normal(epochs)
    val[:best] = np.maximum(val[:best], 1.0951)
    val[best - 1] = 1.09
    val[best:] = rng.uniform(1.10, 1.12, epochs - best)
    recon = val - rng.uniform(0.0, 0.01, epochs)  # train recon a hair below val: no generalisation gap
    reg_raw = 50 + 30 * np.exp(-t / 60) + rng.normal(0, 0.5, epochs)  # weight 0.1: ~5.0 at the end
    smooth = 1.5 + 0.4 * np.exp(-t / 90) + rng.normal(0, 0.02, epochs)
    train = recon + 0.1 * reg_raw + smooth
    comps = {"train_recon": recon, "train_smoothness": smooth, "val_recon": val}
    if weights == "weighted":
        comps["train_reg"] = 0.1 * reg_raw
    else:
        comps["train_reg"] = reg_raw
    if weights == "logged":
        comps["loss_weights"] = {"train": {"recon": 1.0, "reg": 0.1, "smoothness": 1.0}, "val": {"recon": 1.0}}
    return rows_from(phase, val, train, 1e-3, comps)


def divergent(seed=0, epochs=5, noise=0.0):
    """Incident 2: lr 1e-3; epoch 1 0.2847 (best), epoch 2 +42.5 %, epoch 5 0.4580 (+61 %), training loss
    rising too. Longer runs keep rising; `noise` jitters the epochs not quoted."""
    rng = np.random.default_rng(seed)
    val = np.empty(epochs)
    val[:2] = 0.2847, 0.2847 * 1.425
    val[2:] = np.linspace(val[1], 0.4580, 4)[1:][:epochs - 2] if epochs <= 5 else np.concatenate(
        [np.linspace(val[1], 0.4580, 4)[1:], 0.4580 * 1.02 ** np.arange(1, epochs - 4)])
    val[2:4] *= 1 + noise * rng.standard_normal(min(2, max(0, epochs - 2)))
    train = np.linspace(0.30, 0.30 + 0.035 * (epochs - 1), epochs) * (1 + 0.3 * noise * rng.standard_normal(epochs))
    comps = {"train_pred_visual": 0.8 * train, "train_pred_proprio": 0.2 * train,
             "val_pred_visual": 0.8 * val, "val_pred_proprio": 0.2 * val}
    return rows_from("predictor", val, train, 1e-3, comps)


def unstable(seed=0, epochs=20, best=None, end_best=False, alternate=0.8):
    """Incident 3: 20 epochs at lr 5e-4, val jumping between 0.4304 and 0.5360, train improving only 0.077
    (to 0.287; other lengths keep that rate), val 0.43 at the end. The val switches between high and low
    with probability `alternate` each epoch (their rolling std above 0.05 means it mostly alternated); its
    best 0.4304 is pinned at `best` (default: a random epoch in the first half), or at the last epoch."""
    rng = np.random.default_rng(seed)
    high, val = bool(rng.random() < 0.5), np.empty(epochs)
    for i in range(epochs):
        val[i] = rng.uniform(0.49, 0.536) if high else rng.uniform(0.4304, 0.46)
        high = high != (rng.random() < alternate)
    b = int(rng.integers(2, epochs // 2)) if best is None else best - 1
    val[b], val[int(rng.integers(0, epochs))] = 0.4304, 0.5360
    val[-1] = 0.4304 if end_best else 0.4312
    if end_best:
        val[b] = 0.4315
    train = 0.364 - 0.077 / 19 * np.arange(epochs) + rng.normal(0, 0.002, epochs)  # 0.077 per 20 epochs
    train[0], train[-1] = 0.364, 0.364 - 0.077 / 19 * (epochs - 1)  # 0.287 at epoch 20
    return rows_from("predictor", val, train, 5e-4)
