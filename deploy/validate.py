"""Validate deploy/rayservice.yaml against KubeRay's RayService CRD and Ray Serve's config schema.

    pip install check-jsonschema                 # the validator (not a project dependency; on PATH or here)
    python deploy/validate.py --crd ray.io_rayservices.yaml [deploy/rayservice.yaml]

The CRD comes from the KubeRay release the cluster runs
(`ray-operator/config/crd/bases/ray.io_rayservices.yaml` in KubeRay's repository, or
`kubectl get crd rayservices.ray.io -o yaml`); it is not copied into this project.

1. The CRD's `openAPIV3Schema` for the manifest's apiVersion becomes a JSON Schema:
   `x-kubernetes-int-or-string` fields accept an integer or a string, and every object
   with declared properties refuses unknown ones (as `kubectl apply` with the default
   strict field validation does; `x-kubernetes-preserve-unknown-fields` objects stay
   open). check-jsonschema validates the manifest against it: the RayService spec, and
   the head and worker pod templates KubeRay embeds in full (containers, resources,
   env, volumes, ports).
2. `spec.serveConfigV2` (a YAML string the CRD cannot look into) is validated with Ray
   Serve's own `ServeDeploySchema` when Ray is installed (`pip install ".[ray]"`).

Exit status 0 when both pass; 1 with the validators' messages otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def json_schema(node: Any) -> Any:
    """The CRD's structural schema as a JSON Schema, strict about unknown fields."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crd", type=Path, required=True, help="KubeRay's ray.io_rayservices.yaml")
    ap.add_argument("manifest", type=Path, nargs="?", default=HERE / "rayservice.yaml")
    args = ap.parse_args(argv)

    manifest = yaml.safe_load(args.manifest.read_text())
    crd = yaml.safe_load(args.crd.read_text())
    group, version = manifest["apiVersion"].split("/")
    if crd["spec"]["group"] != group or crd["spec"]["names"]["kind"] != manifest["kind"]:
        print(f"{args.crd} defines {crd['spec']['names']['kind']} in {crd['spec']['group']}, "
              f"not {manifest['kind']} in {group}", file=sys.stderr)
        return 1
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in served:
        print(f"{args.crd} has no version {version} (it has {', '.join(served)})", file=sys.stderr)
        return 1
    schema = {"$schema": "http://json-schema.org/draft-07/schema#",
              **json_schema(served[version]["schema"]["openAPIV3Schema"])}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rayservice.schema.json"
        path.write_text(json.dumps(schema))
        cli = shutil.which("check-jsonschema")
        cmd = [cli] if cli else [sys.executable, "-m", "check_jsonschema"]
        r = subprocess.run([*cmd, "--schemafile", str(path), str(args.manifest)])
        failed |= r.returncode != 0

    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError:
        print("serveConfigV2: not checked (Ray Serve is not installed: pip install '.[ray]')", file=sys.stderr)
    else:
        from pydantic import ValidationError as V2Error
        try:
            from ray._common.pydantic_compat import ValidationError as RayError  # Ray's pydantic.v1 shim
        except ImportError:
            RayError = V2Error
        serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
        try:
            validate = getattr(ServeDeploySchema, "model_validate", None) or ServeDeploySchema.parse_obj  # pydantic 2 or 1
            validate(serve_config)
            apps = [a["import_path"] for a in serve_config["applications"]]
            print(f"serveConfigV2: ok against ray.serve.schema.ServeDeploySchema (applications: {', '.join(apps)})")
        except (V2Error, RayError) as exc:
            print(f"serveConfigV2: {exc}", file=sys.stderr)
            failed = 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
