"""Read a DINO-WM training checkpoint without running any of its code.

DINO-WM's trainer (`train.py::save_ckpt`) `torch.save`s a dict of *whole*
objects: `{"epoch", "predictor", "predictor_optimizer", "action_encoder",
"proprio_encoder"}`, plus `"encoder"`/`"decoder"` and their optimisers when
those were trained. Unpickling that normally imports DINO-WM, `accelerate` and
torch-hub code and lets the file call any function it names.

How it is read here, and why this route:
torch's own weights-only unpickler (`torch.load(weights_only=True)`) is an
allow-list interpreter of the pickle opcodes: it resolves a class only by
exact name from an allow-list, never imports a module, only calls allow-listed
callables, only builds allow-listed types, and only accepts storage records as
persistent ids. It also reads torch's zip format (storages, dtypes, devices,
byte order) exactly as `torch.save` wrote it. We add to its allow-list, for
the duration of one load, the known DINO-WM, DINOv2, `accelerate`, `torch.nn`
and `torch.optim` class paths, each mapped to an inert stand-in
(`PickledObject`) that records the arguments and state pickle hands it and
has no other behaviour. That is safer than a `pickle.Unpickler` subclass with
a restricted `find_class`, which would run the C unpickler's full opcode set
and need our own storage loader. Any other global (`os.system`, an unknown
class) is refused before anything is built: the checkpoint's globals are
listed statically first (`get_unsafe_globals_in_checkpoint`) so the error can
name every offender, and the load itself enforces the same allow-list.

Tensors and `nn.Parameter`s come back as real CPU tensors; modules come back
as stand-ins whose `state` is the module's pickled `__dict__` (`_parameters`,
`_buffers`, `_modules`, plain attributes); `state_dict()` walks them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import torch

# Class paths a DINO-WM checkpoint may hold, by origin. Everything else is refused.
_DINO_WM = ("models.vit.ViTPredictor", "models.vit.Transformer", "models.vit.Attention",
            "models.vit.FeedForward", "models.proprio.ProprioceptiveEmbedding",
            "models.dino.DinoV2Encoder", "models.vqvae.VQVAE", "models.vqvae.Quantize",
            "models.vqvae.ResBlock", "models.vqvae.Encoder", "models.vqvae.Decoder")
# DINOv2 as torch.hub builds it; present only when the run fine-tuned its encoder.
_DINOV2 = ("dinov2.models.vision_transformer.DinoVisionTransformer",
           "dinov2.models.vision_transformer.BlockChunk", "dinov2.layers.patch_embed.PatchEmbed",
           "dinov2.layers.block.Block", "dinov2.layers.block.NestedTensorBlock",
           "dinov2.layers.attention.Attention", "dinov2.layers.attention.MemEffAttention",
           "dinov2.layers.mlp.Mlp", "dinov2.layers.layer_scale.LayerScale",
           "dinov2.layers.drop_path.DropPath")
_TORCH_NN = tuple(f"torch.nn.modules.{name}" for name in (
    "linear.Linear", "linear.Identity", "normalization.LayerNorm", "normalization.GroupNorm",
    "dropout.Dropout", "activation.GELU", "activation.ReLU", "activation.SiLU", "activation.Tanh",
    "activation.Sigmoid", "activation.Softmax", "container.Sequential", "container.ModuleList",
    "container.ModuleDict", "conv.Conv1d", "conv.Conv2d", "conv.ConvTranspose2d",
    "batchnorm.BatchNorm1d", "batchnorm.BatchNorm2d", "sparse.Embedding"))
# Optimisers as `accelerate.prepare` wraps them (accelerate 0.26, DINO-WM's pin).
_TRAINING = ("torch.optim.adam.Adam", "torch.optim.adamw.AdamW", "torch.optim.sgd.SGD",
             "torch.amp.grad_scaler.GradScaler", "torch.cuda.amp.grad_scaler.GradScaler",
             "accelerate.optimizer.AcceleratedOptimizer", "accelerate.state.AcceleratorState",
             "accelerate.state.PartialState", "accelerate.state.GradientState",
             "accelerate.utils.dataclasses.DistributedType", "accelerate.utils.dataclasses.DynamoBackend",
             "accelerate.utils.dataclasses.TorchDynamoPlugin",
             "accelerate.utils.dataclasses.GradientAccumulationPlugin",
             "accelerate.utils.dataclasses.PrecisionType",
             # an optimiser's `state` is `defaultdict(dict)`; see `_plain_dict`
             "builtins.dict")
KNOWN_CLASSES: tuple[str, ...] = _DINO_WM + _DINOV2 + _TORCH_NN + _TRAINING
# The enums among them. Python pickles an enum member by value, `Cls(value)`, except
# CPython 3.11.0 to 3.11.4 (3.11.2 is Debian bookworm's python3), which pickle it by name
# as `getattr(Cls, name)` (bpo-44342, reverted in 3.11.5 by gh-105332). `_enum_member`
# accepts that one form of `getattr`, for these classes alone.
ENUM_CLASSES: tuple[str, ...] = ("accelerate.utils.dataclasses.DistributedType",
                                 "accelerate.utils.dataclasses.DynamoBackend",
                                 "accelerate.utils.dataclasses.PrecisionType")


class CheckpointError(ValueError):
    """The checkpoint cannot be read safely or is not DINO-WM-shaped; the message says why."""


class PickledObject:
    """What a pickled object was, never what it did: the class path it was
    saved under, the arguments pickle rebuilt it with, and the state pickle
    handed it (a module's `__dict__`). It has no behaviour of its own."""

    class_path: ClassVar[str] = ""
    member_name: str | None = None  # an enum member pickled by name (`_enum_member`); by value it is `args[0]`

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Called when pickle rebuilds by calling the class (enums); records nothing more."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.class_path}>"


def _stand_in(path: str) -> type[PickledObject]:
    name = path.rsplit(".", 1)[-1]
    return type(name, (PickledObject,), {"class_path": path, "__module__": __name__,
                                        "__qualname__": name})


STAND_INS: dict[str, type[PickledObject]] = {path: _stand_in(path) for path in KNOWN_CLASSES}


def _plain_dict(*_factory: Any) -> dict:
    """Stands in for `collections.defaultdict(factory)`: a plain dict (the
    weights-only unpickler only fills plain dicts); the factory is dropped."""
    return {}


def _enum_member(cls: Any, name: Any) -> PickledObject:
    """Stands in for `builtins.getattr` in a checkpoint: the by-name form of an
    enum member, `getattr(EnumClass, "MEMBER")`, for the allow-listed enum
    classes only. Any other use of `getattr` (another class, an attribute of
    an object, a private name) is refused: it is how a pickle reaches
    functions that the allow-list does not name."""
    path = getattr(cls, "class_path", None) if isinstance(cls, type) and issubclass(cls, PickledObject) else None
    if path not in ENUM_CLASSES or not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        shown = path or type(cls).__name__
        raise pickle.UnpicklingError(
            f"builtins.getattr({shown}, {name!r}) refused: a checkpoint may use getattr only for a member "
            f"of the enums {', '.join(ENUM_CLASSES)}")
    member = cls.__new__(cls)
    member.member_name = name
    return member


def _allow_list() -> list[tuple[Any, str]]:
    return [(cls, path) for path, cls in STAND_INS.items()] + [
        (_plain_dict, "collections.defaultdict"), (_enum_member, "builtins.getattr")]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a DINO-WM checkpoint as a dict of stand-ins and CPU tensors.

    Raises CheckpointError naming every class or function the file refers to
    that is not on the allow-list; nothing from the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if torch.torch_version.TorchVersion(torch.__version__) < "2.6":
        # (stand-in, "saved.class.path") allow-list entries arrived in torch 2.6
        raise CheckpointError(f"reading DINO-WM checkpoints needs torch >= 2.6; this is {torch.__version__}")
    with torch.serialization.safe_globals(_allow_list()):
        try:
            unknown = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except ValueError:
            unknown = []  # not a zip checkpoint (legacy format): the load below still enforces the list
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{path}: refused while scanning its pickle: {exc}") from exc
        if unknown:
            raise CheckpointError(
                f"{path} refers to {', '.join(unknown)}, which this importer does not know as a DINO-WM, "
                "DINOv2, accelerate or torch class; it was refused and nothing in the file was run. "
                "If the run used a modified DINO-WM, add its module's class path to "
                "models.dino_wm.checkpoint.KNOWN_CLASSES after reading what it stores.")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{path}: refused by the restricted unpickler; nothing was run: {exc}") from exc
        except (RuntimeError, EOFError) as exc:
            raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}; a DINO-WM checkpoint is a dict")
    return ckpt


# Walking stand-ins -------------------------------------------------------------
def module_state(obj: Any, what: str) -> dict[str, Any]:
    """The pickled `__dict__` of a stand-in module; `what` names it in errors."""
    if not isinstance(obj, PickledObject) or not isinstance(obj.state, dict) or "_modules" not in obj.state:
        raise CheckpointError(f"{what} is {obj!r}, not a pickled torch module")
    return obj.state


def class_path(obj: Any) -> str:
    return obj.class_path if isinstance(obj, PickledObject) else type(obj).__name__


def children(obj: Any, what: str) -> dict[str, Any]:
    """Submodules of a stand-in module, in registration order."""
    return dict(module_state(obj, what)["_modules"])


def state_dict(obj: Any, what: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The `state_dict()` the module had: parameters, persistent buffers, recursively."""
    st = module_state(obj, what)
    out: dict[str, torch.Tensor] = {}
    for name, p in st.get("_parameters", {}).items():
        if p is not None:
            out[prefix + name] = p.detach()
    skip = st.get("_non_persistent_buffers_set", set())
    for name, b in st.get("_buffers", {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b
    for name, m in st["_modules"].items():
        if m is not None:
            out.update(state_dict(m, f"{what}.{name}", f"{prefix}{name}."))
    return out
