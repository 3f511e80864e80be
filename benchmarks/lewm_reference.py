"""Exactness of the LeWM import against the reference code, at run time.

The reference is stable-worldmodel's LeWM (`stable_worldmodel/wm/lewm/{lewm,module}.py`,
whose `module.py` is le-wm's at upstream commit c8a4417 reformatted, and whose `LeWM`
is le-wm's `JEPA` with a rollout that embeds all actions at once) with the encoder
stable-pretraining's `vit_hf` builds: Hugging Face's `ViTModel`. None of it is in this
repository: `--prepare DIR` fetches it from PyPI into DIR (git-ignored `.peers/lewm` by
default; with stable-worldmodel's solvers, which `benchmarks.lewm_peer` drives), and the
reference side runs in a separate process that imports it from there.

    python -m benchmarks.lewm_reference --prepare .peers/lewm       # once: pip download + install --target
    # optional, le-wm's own JEPA too (upstream lucas-maes/le-wm, e.g. commit c8a4417), from a checkout:
    mkdir -p .peers/lewm/le-wm && cp LE_WM_CHECKOUT/{jepa,module}.py .peers/lewm/le-wm/
    python -m benchmarks.lewm_reference [--reference DIR] [--size published|small] [--out result.json]

The reference process builds a seeded LeWM (every parameter and BatchNorm statistic
random: a fresh model's AdaLN-zero blocks would be the identity), saves it as the
Hugging Face mirror publishes it (`weights.pt` + `config.json`) and records, on fixed
inputs, its encodings (`encode`), teacher-forced predictions over a 3-frame window
(`predict`), a rollout (`rollout`) and the planning cost of candidate sequences
(`get_cost`). This process imports the files with `models.lewm.importer` and computes
the same with `LeWM`; the result is the largest absolute and relative difference of each.
le-wm's cost is a sum of squares over the 192 dimensions, this project's objective
their mean: the cost is compared as objective x embed_dim.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".peers" / "lewm"
SWM_VERSION = "0.1.1"
SWM_FILES = ("stable_worldmodel/wm/lewm/lewm.py", "stable_worldmodel/wm/lewm/module.py")
# its planning: the CEM solver package (benchmarks/lewm_peer.py) and the protocol module it imports
SWM_SOLVER = ("stable_worldmodel/solver/", "stable_worldmodel/protocols.py")
SITE_PACKAGES = ("transformers>=4.50,<5", "einops", "loguru")  # loguru: the solvers' logger
TOLERANCE = 1e-4
log = logging.getLogger(__name__)

# Sizes: "published" is le-wm's config/train/model/lewm.yaml at img_size 224; "small" keeps the test fast.
SIZES: dict[str, dict[str, Any]] = {
    "published": {"encoder": {"size": "tiny", "patch_size": 14, "image_size": 224},
                  "embed": 192, "hidden": 2048, "predictor": {"depth": 6, "heads": 16, "dim_head": 64, "mlp_dim": 2048}},
    "small": {"encoder": {"size": "tiny", "patch_size": 14, "image_size": 56, "hidden_size": 48,
                          "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 96},
              "embed": 32, "hidden": 64, "predictor": {"depth": 2, "heads": 4, "dim_head": 16, "mlp_dim": 64}},
}
RAW_ACTION_DIM, FRAMESKIP, HISTORY, HORIZON, SAMPLES = 2, 5, 3, 5, 6


# The reference environment -----------------------------------------------------------
def find_reference(path: str | Path | None) -> Path | None:
    """A folder prepared by `prepare` (its `swm/` holds stable-worldmodel's LeWM files, `site/`
    transformers and einops): `path`, else $LEWM_REFERENCE, else .peers/lewm."""
    for candidate in (path, os.environ.get("LEWM_REFERENCE"), DEFAULT_DIR):
        if candidate and all((Path(candidate) / "swm" / f).is_file() for f in SWM_FILES) and (
                Path(candidate) / "site" / "transformers").is_dir():
            return Path(candidate)
    return None


def prepare(folder: Path) -> Path:
    """Fetch the reference from PyPI into `folder`: stable-worldmodel's wheel (only its LeWM
    files and its solvers are unpacked: its package __init__ imports environments this check
    does not need) and `pip install --target folder/site` of transformers, einops and loguru
    (gymnasium, which the solvers import, is this project's dependency; no torch: this
    interpreter's is used; no torchvision: its PyPI wheel is a CUDA build)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"stable-worldmodel=={SWM_VERSION}",
                        "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("stable_worldmodel-*.whl")
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name in SWM_FILES or (name.startswith(SWM_SOLVER) and name.endswith(".py")):
                    z.extract(name, folder / "swm")
    subprocess.run([sys.executable, "-m", "pip", "install", "--target", str(folder / "site"), *SITE_PACKAGES],
                   check=True)
    (folder / "VERSION").write_text(f"stable-worldmodel=={SWM_VERSION}\n")
    return folder


# The reference side (runs in its own process, with the reference importable) ---------------
def _load_file(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def published_config(size: str) -> dict[str, Any]:
    s = SIZES[size]
    e = s["embed"]
    vit = s["encoder"].get("hidden_size", 192)
    return {"encoder": dict(s["encoder"]),
            "predictor": {"num_frames": HISTORY, **s["predictor"], "input_dim": e, "hidden_dim": e, "output_dim": e,
                          "dropout": 0.1, "emb_dropout": 0.0},
            "action_encoder": {"input_dim": FRAMESKIP * RAW_ACTION_DIM, "emb_dim": e},
            "projector": {"input_dim": vit, "output_dim": e, "hidden_dim": s["hidden"]},
            "pred_proj": {"input_dim": e, "output_dim": e, "hidden_dim": s["hidden"]}}


def _mlp(cfg: dict[str, Any], key: str) -> Any:
    """The reference's BatchNorm MLP (projector, pred_proj) for `cfg[key]`."""
    import torch

    c = cfg[key]
    return sys.modules["lewm_reference_module"].MLP(input_dim=c["input_dim"], output_dim=c["output_dim"],
                                                    hidden_dim=c["hidden_dim"], norm_fn=torch.nn.BatchNorm1d)


def reference_model(reference: Path, cfg: dict[str, Any]) -> Any:
    """stable-worldmodel's `LeWM` built from the prepared reference for a published config
    (`published_config`), its encoder as stable-pretraining's `vit_hf` builds it; untrained,
    in train mode. Imports the reference's modules into this process (`sys.path` gets its
    `site/` appended: this interpreter's own torch and numpy win)."""
    import torch

    if str(reference / "site") not in sys.path:
        sys.path.append(str(reference / "site"))
    from transformers import ViTConfig, ViTModel

    module = _load_file("lewm_reference_module", reference / "swm" / SWM_FILES[1])
    lewm = _load_file("lewm_reference_lewm", reference / "swm" / SWM_FILES[0])
    enc = cfg["encoder"]
    base = {"tiny": (192, 12, 3)}[enc["size"]]
    hidden = enc.get("hidden_size", base[0])
    # as stable-pretraining's vit_hf(size, patch_size, image_size, pretrained=False, use_mask_token=False, **kw)
    vit_cfg = ViTConfig(hidden_size=hidden, num_hidden_layers=enc.get("num_hidden_layers", base[1]),
                        num_attention_heads=enc.get("num_attention_heads", base[2]),
                        intermediate_size=enc.get("intermediate_size", 4 * hidden), image_size=enc["image_size"],
                        patch_size=enc["patch_size"])
    encoder = ViTModel(vit_cfg, add_pooling_layer=False, use_mask_token=False)
    encoder.config.interpolate_pos_encoding = True
    predictor_class = getattr(module, "ARPredictor", None) or module.Predictor  # le-wm's name, swm 0.1.1's name
    return lewm.LeWM(encoder=encoder, predictor=predictor_class(**cfg["predictor"]),
                     action_encoder=module.Embedder(**cfg["action_encoder"]), projector=_mlp(cfg, "projector"),
                     pred_proj=_mlp(cfg, "pred_proj"))


def reference_side(reference: Path, out: Path, size: str, seed: int) -> None:
    import torch

    cfg = published_config(size)
    enc = cfg["encoder"]
    model = reference_model(reference, cfg)
    encoder = model.encoder
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if t.is_floating_point():
                scale = 1.0 if t.dim() < 2 else t[0].numel() ** -0.5
                t.copy_(0.5 + torch.rand(t.shape, generator=g) if name.endswith("running_var")
                        else scale * torch.randn(t.shape, generator=g))
    model = model.eval().requires_grad_(False)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "weights.pt")
    (out / "config.json").write_text(json.dumps(cfg, indent=1))

    s = enc["image_size"]
    a_dim = FRAMESKIP * RAW_ACTION_DIM
    pixels = torch.randn(4, 3, s, s, generator=g)  # normalised frames
    window = torch.randn(2, HISTORY, cfg["predictor"]["input_dim"], generator=g)
    window_actions = torch.randn(2, HISTORY, a_dim, generator=g)
    candidates = torch.randn(1, SAMPLES, HORIZON, a_dim, generator=g)
    outputs: dict[str, torch.Tensor] = {}
    source = reference / "le-wm"
    if (source / "jepa.py").is_file() and (source / "module.py").is_file():
        # le-wm's own JEPA on the same weights: its rollout appends one frame per step and
        # re-embeds the actions so far, where stable-worldmodel's embeds every action at once
        jepa = _load_file("lewm_reference_jepa", source / "jepa.py")
        lewm_module = _load_file("lewm_reference_le_wm_module", source / "module.py")
        upstream = jepa.JEPA(encoder=encoder, predictor=lewm_module.ARPredictor(**cfg["predictor"]),
                             action_encoder=lewm_module.Embedder(**cfg["action_encoder"]),
                             projector=_mlp(cfg, "projector"), pred_proj=_mlp(cfg, "pred_proj"))
        upstream.load_state_dict(model.state_dict())
        upstream = upstream.eval().requires_grad_(False)
        with torch.inference_mode():
            info = {"pixels": pixels[:1, None, None].expand(1, SAMPLES, 1, 3, s, s),
                    "goal": pixels[1:2, None, None].expand(1, SAMPLES, 1, 3, s, s), "action": candidates[:, :, :1]}
            outputs["le_wm_cost"] = upstream.get_cost(info, candidates.clone())[0]
            outputs["le_wm_rollout"] = info["predicted_emb"][0, :, 1:]
    with torch.inference_mode():
        emb = model.encode({"pixels": pixels[:, None]})["emb"][:, 0]  # (4, E)
        predicted = model.predict(window, model.action_encoder(window_actions))  # (2, T, E)
        info = {"pixels": pixels[:1, None, None].expand(1, SAMPLES, 1, 3, s, s),
                "goal": pixels[1:2, None, None].expand(1, SAMPLES, 1, 3, s, s),
                "action": candidates[:, :, :1]}
        cost = model.get_cost(info, candidates.clone())  # (1, S)
        rollout = info["predicted_emb"][0, :, 1:]  # (S, H, E): frames 1..H
    torch.save({"pixels": pixels, "window": window, "window_actions": window_actions, "candidates": candidates[0],
                "emb": emb, "predicted": predicted, "rollout": rollout, "cost": cost[0], **outputs}, out / "outputs.pt")


# This project's side ---------------------------------------------------------------------
def compare(folder: Path) -> dict[str, Any]:
    """Import `folder`'s weights.pt + config.json and compare with the reference's outputs."""
    import torch

    from models.lewm.importer import import_checkpoint, read_stats, stats_provenance
    from models.world_model import Latent
    from planning.objectives import objective

    stats_path = folder / "stats.json"
    stats_path.write_text(json.dumps({"action_mean": [0.0] * RAW_ACTION_DIM, "action_std": [1.0] * RAW_ACTION_DIM}))
    stats = read_stats(stats_path, stats_provenance("train", "seeded reference check"))
    model = import_checkpoint(folder / "weights.pt", folder / "config.json", stats, folder / "lewm.pt",
                              frameskip=FRAMESKIP)
    ref = torch.load(folder / "outputs.pt", weights_only=True)
    with torch.inference_mode():
        z = model.encode(ref["pixels"])
        predicted = model.predict(ref["window"], ref["window_actions"])
        z_obs, z_goal = z.index(slice(0, 1)), z.index(slice(1, 2))
        s = ref["candidates"].shape[0]
        obs = Latent(z_obs.visual.expand(s, -1, -1), z_obs.proprio.expand(s, -1))
        goal = Latent(z_goal.visual.expand(s, -1, -1), z_goal.proprio.expand(s, -1))
        rollout = model.rollout(obs, ref["candidates"])
        cost = objective(rollout, goal, "last", 0.0) * model.config.embed_dim

    def err(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
        diff = (got - want).abs()
        return {"max_abs": float(diff.max()), "max_rel": float((diff / want.abs().clamp_min(1e-6)).max()),
                "max_ref": float(want.abs().max())}

    checks = {"encode": err(z.visual[:, 0], ref["emb"]), "predict": err(predicted, ref["predicted"]),
              "rollout": err(rollout.visual[:, :, 0], ref["rollout"]), "cost": err(cost, ref["cost"])}
    if "le_wm_rollout" in ref:
        checks.update(le_wm_rollout=err(rollout.visual[:, :, 0], ref["le_wm_rollout"]),
                      le_wm_cost=err(cost, ref["le_wm_cost"]))
    return {"checks": checks, "tolerance": TOLERANCE, "params": model.num_parameters(),
            "ok": all(c["max_abs"] <= TOLERANCE * max(1.0, c["max_ref"]) for c in checks.values())}


def versions(reference: Path) -> dict[str, str]:
    """Versions of what the reference side ran with (read from the installed metadata)."""
    import torch

    found = {"torch": torch.__version__, "stable-worldmodel": SWM_VERSION}
    for dist in (reference / "site").glob("*.dist-info"):
        name, _, version = dist.name[:-len(".dist-info")].rpartition("-")
        if name.lower() in ("transformers", "einops"):
            found[name.lower()] = version
    return found


def run(reference: Path, size: str = "small", seed: int = 0, workdir: Path | None = None) -> dict[str, Any]:
    """Both sides: the reference in a subprocess (its modules never enter this process), then
    the comparison here."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(workdir or tmp)
        cmd = [sys.executable, "-m", "benchmarks.lewm_reference", "--side", "reference", "--reference",
               str(reference), "--size", size, "--seed", str(seed), "--workdir", str(folder)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode:
            raise RuntimeError(f"the reference side failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        result = compare(folder)
    code = (f"stable-worldmodel {SWM_VERSION}: {', '.join(SWM_FILES)}; encoder transformers.ViTModel as "
            "stable-pretraining's vit_hf builds it")
    if (reference / "le-wm" / "jepa.py").is_file():
        code += f"; le-wm's jepa.py + module.py from {reference / 'le-wm'} (le_wm_* checks)"
    return {**result, "size": size, "seed": seed, "reference": {"code": code, "versions": versions(reference)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lewm_reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", type=Path, help="fetch the reference into this folder (e.g. .peers/lewm) and exit")
    ap.add_argument("--reference", help="a prepared folder (default: $LEWM_REFERENCE, .peers/lewm)")
    ap.add_argument("--size", choices=sorted(SIZES), default="published")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    ap.add_argument("--side", choices=("reference",), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.prepare is not None:
        log.info("reference prepared in %s", prepare(args.prepare))
        return 0
    reference = find_reference(args.reference)
    if reference is None:
        print("no LeWM reference: run `python -m benchmarks.lewm_reference --prepare .peers/lewm` "
              "(or set $LEWM_REFERENCE)", file=sys.stderr)
        return 2
    if args.side == "reference":
        reference_side(reference, args.workdir, args.size, args.seed)
        return 0
    result = run(reference, args.size, args.seed)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
