"""Pixel decoder for the autoencoder phase (training only, never served).

Patch tokens (N, P, D) on a g x g grid -> (N, 3, S, S) normalised pixels,
through stride-2 transposed convolutions until the grid reaches S. It exists
so the conv encoder learns a latent that keeps everything in the frame (a
reconstruction objective cannot collapse, unlike a purely predictive one).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models import WorldModelConfig


class Decoder(nn.Module):
    def __init__(self, cfg: WorldModelConfig, width: int = 64) -> None:
        super().__init__()
        if cfg.encoder != "conv":
            raise ValueError(f"the autoencoder phase trains a conv encoder; got encoder={cfg.encoder!r}")
        self.grid = cfg.token_grid
        ups = int(math.log2(cfg.image_size // cfg.token_grid))
        if self.grid * 2**ups != cfg.image_size:
            raise ValueError(f"image_size={cfg.image_size} is not token_grid={cfg.token_grid} times a power of 2")
        layers: list[nn.Module] = [nn.Conv2d(cfg.encoder_dim, width, 1)]
        c = width
        for i in range(ups):
            c_out = max(16, width // 2 ** (i + 1)) if i < ups - 1 else 16
            layers += [nn.GELU(), nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1)]
            c = c_out
        layers += [nn.GELU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, p, d = tokens.shape
        x = tokens.transpose(1, 2).reshape(n, d, self.grid, self.grid)  # (N, D, g, g)
        return self.net(x)  # (N, 3, S, S)
