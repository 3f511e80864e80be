"""The README's Python API block runs as written, with numpy uint8 frames as its comment promises."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from models import DEFAULT_MODEL_PATH

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_api_block() -> str:
    section = README.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_block_runs_with_numpy_uint8_frames(capsys):
    code = python_api_block().replace('"path/to/model.pt"', repr(str(DEFAULT_MODEL_PATH)))
    rng = np.random.default_rng(0)
    frames = lambda n: rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)  # noqa: E731
    proprio = lambda n: rng.uniform(0, 64, (n, 2)).astype(np.float32)  # noqa: E731
    namespace = {"obs_frames": frames(2), "obs_proprio": proprio(2), "goal_frames": frames(2),
                 "goal_proprio": proprio(2), "new_frame": frames(1), "new_proprio": proprio(1)}
    torch.set_num_threads(1)
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    r, r2 = namespace["r"], namespace["r2"]
    assert np.isfinite(r.loss) and r2.actions.shape == r.actions.shape
    assert namespace["env_actions"].shape[-1] == 2
    assert str(r.iterations) in capsys.readouterr().out
