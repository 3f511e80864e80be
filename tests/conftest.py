"""Shared fixtures. Tests run on the CPU with tiny models; nothing is downloaded."""

from __future__ import annotations

import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
