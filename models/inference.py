"""Inference options of a loaded model: numeric precision and `torch.compile`.

    model = load_model(path, device="cuda", dtype="bf16", compile=True)
    # or, on a model already loaded:
    model.configure_inference(InferenceConfig(dtype="bf16", compile=True))

`dtype` ("fp32" default, "bf16", "fp16") is the precision the encoder and
the predictor compute in. Latents and rollout outputs are handed back in
fp32, so the objective, the CEM statistics and everything downstream stay
fp32 whatever the model computes in.

`strategy` says how: "autocast" keeps fp32 weights and runs the model under
`torch.autocast` (matmuls in `dtype`, reductions such as LayerNorm and
softmax in fp32 where autocast's op lists say so); "cast" converts the
weights and the inputs to `dtype` and runs everything in it. Measured on
this project's CPU (`benchmarks.studies.precision`, docs/gpu.md) the two could not be
told apart: about 1 % median relative change of the default model's losses
and >= 90 % of the fp32 elites kept by both, and equal speed within noise
(both emulated there, several times slower than fp32). The default is
autocast because it keeps fp32 weights (one loaded copy serves any
precision, nothing is converted) and keeps reductions in fp32 on GPUs, the
usual practice; re-measure on a GPU with `scripts/device_check.sh`.

`compile` wraps the rollout with `torch.compile`. Compilation happens on a
warm-up rollout inside `configure_inference`; if it fails (no C++ compiler,
an unsupported op, an old torch), a warning is logged and the model runs
eagerly, so asking for it never breaks serving. A compiled rollout that
fails later (other than out of memory, which the planner handles by
halving its chunk) also falls back to eager, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Strategy = Literal["autocast", "cast"]
STRATEGIES = ("autocast", "cast")


@dataclass(frozen=True)
class InferenceConfig:
    """Args:
    dtype: "fp32" (default, exact), "bf16" or "fp16": precision the encoder
        and predictor compute in; outputs are always returned as fp32.
    compile: wrap the rollout in `torch.compile` (falls back to eager with a
        logged warning when it cannot compile).
    strategy: "autocast" (fp32 weights, `torch.autocast`) or "cast" (weights
        and inputs converted to `dtype`). Ignored for fp32.
    compile_backend: torch.compile's backend. "inductor" (default) generates
        fused kernels (C++ on CPU, Triton on CUDA); compiling takes minutes on
        a small shared CPU. "eager" only captures the graph (Dynamo) and runs
        it op by op: the tests use it to check the compiled path cheaply.
    compile_mode: torch.compile's mode, e.g. "reduce-overhead" (CUDA graphs,
        for small models whose GPU time is kernel launches); None = default.
    compile_horizons: planning horizons compiled at load time (the rollout
        loop is unrolled per horizon); another horizon compiles on first use.
    """

    dtype: str = "fp32"
    compile: bool = False
    strategy: Strategy = "autocast"
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    compile_horizons: tuple[int, ...] = (5,)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: expected one of {sorted(DTYPES)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: expected one of {STRATEGIES}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile={self.compile!r}: expected True or False")
        if not self.compile_horizons or any(not isinstance(h, int) or h < 1 for h in self.compile_horizons):
            raise ValueError(f"compile_horizons={self.compile_horizons!r}: need horizons >= 1")
        if not self.compile_backend:
            raise ValueError(f"compile_backend={self.compile_backend!r}: name a torch.compile backend")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def reduced(self) -> bool:
        """True when the model computes in less than fp32."""
        return self.dtype != "fp32"

    @property
    def element_bytes(self) -> int:
        """Bytes per activation element, for memory estimates (autocast keeps some
        fp32 temporaries; matmul outputs, the bulk, are in `dtype`)."""
        return torch.empty(0, dtype=self.torch_dtype).element_size()

    def describe(self) -> dict[str, object]:
        return {"dtype": self.dtype, "compile": self.compile, "strategy": self.strategy if self.reduced else None,
                "compile_backend": self.compile_backend if self.compile else None}


def check_supported(cfg: InferenceConfig, device: torch.device) -> None:
    """Raise ValueError when `device` cannot compute in `cfg.dtype` with `cfg.strategy`
    (e.g. bf16 on a pre-Ampere GPU): a tiny linear, LayerNorm and attention are tried."""
    if not cfg.reduced:
        return
    if device.type == "cuda" and cfg.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"dtype='bf16' is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32")
    x = torch.randn(2, 4, 8, device=device)
    lin, norm = torch.nn.Linear(8, 8).to(device), torch.nn.LayerNorm(8).to(device)
    try:
        with torch.inference_mode(), precision(cfg, device):
            if cfg.strategy == "cast":
                lin, norm, x = lin.to(cfg.torch_dtype), norm.to(cfg.torch_dtype), x.to(cfg.torch_dtype)
            h = norm(lin(x)).unsqueeze(1)  # (2, 1, 4, 8)
            torch.nn.functional.scaled_dot_product_attention(h, h, h)
    except (RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"dtype={cfg.dtype!r} with strategy={cfg.strategy!r} is not supported on "
                         f"{device}: {exc}") from exc


@contextlib.contextmanager
def precision(cfg: InferenceConfig, device: torch.device) -> Iterator[None]:
    """The autocast region for `cfg` (a no-op for fp32 and for the cast strategy)."""
    if cfg.reduced and cfg.strategy == "autocast":
        with torch.autocast(device_type=device.type, dtype=cfg.torch_dtype):
            yield
    else:
        yield


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def guarded_rollout(model: Any, z0: Any, actions: torch.Tensor) -> Any:
    """`model._rollout(z0, actions)` under the model's inference config: eager fp32 as it is; else in
    its precision (inputs cast with `model._cast_inputs`) through its compiled rollout when it has one,
    falling back to eager for good if the compiled code fails (but not on out-of-memory, which the
    planner halves its chunk for). Returns the model's `Latent` in fp32. One wrapper for every model
    family (`WorldModel`, `models.lewm.LeWM`)."""
    if not model.inference.reduced and model._compiled_rollout is None:
        return model._rollout(z0, actions)
    with precision(model.inference, model.device):
        z0, actions = model._cast_inputs(z0, actions)
        out = None
        if model._compiled_rollout is not None:
            try:
                out = model._compiled_rollout(z0, actions)
            except Exception as exc:  # noqa: BLE001 - any compiled-code failure but OOM: run eagerly
                if is_out_of_memory(exc):
                    raise
                log.warning("compiled rollout of %s failed (%s: %s); running eagerly from now on",
                            type(model).__name__, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                model._compiled_rollout = None
        if out is None:
            out = model._rollout(z0, actions)
    return type(out)(out.visual.float(), out.proprio.float())
