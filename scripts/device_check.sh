#!/usr/bin/env bash
# Where do we stand on a GPU? One command on a machine with a CUDA GPU:
#
#   scripts/device_check.sh [--out device_check.json] [--skip-tests]
#   scripts/device_check.sh --cpu [--out ...]     # dry run on a CPU: quick sizes, checks the script
#   PY=/path/to/python scripts/device_check.sh --no-setup ...   # use an installed environment as it is
#
# 1. installs what it needs (scripts/setup.sh: .venv with a CUDA torch and the test extras);
# 2. runs the test suite with WM_TEST_DEVICE=cuda (model tests on the GPU), recording the summary;
# 3. benchmarks the default model (benchmarks.studies.precision: fp32, bf16, fp16, compiled; agreement with
#    fp32; closed loop) and the DINO-WM-size model (benchmarks.studies.dino_size: native and imported
#    artifacts, paper settings, through the real server) in fp32 and bf16;
# 4. writes ONE JSON with the device name and every figure (default device_check.json).
#
# A step that fails is recorded (its exit status and the tail of its log) and the
# next step still runs, so one broken piece does not hide the others. Without a
# CUDA GPU it refuses with exit status 3 unless --cpu is given.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

OUT=device_check.json
MODE=cuda
SKIP_TESTS=0
SETUP=1
STEP_TIMEOUT=${STEP_TIMEOUT:-1200}
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --cpu) MODE=cpu; shift ;;
        --skip-tests) SKIP_TESTS=1; shift ;;
        --no-setup) SETUP=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "device_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$MODE" = cuda ] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; }; then
    echo "device_check: no CUDA GPU here (nvidia-smi missing or failing). Run it on a GPU machine," \
         "or pass --cpu for a dry run of the script on this CPU." >&2
    exit 3
fi

if [ "$SETUP" = 1 ]; then
    EXTRAS=test,pusht ./scripts/setup.sh || { echo "device_check: setup failed" >&2; exit 4; }
    PY=${VENV:-.venv}/bin/python
else
    PY=${PY:-.venv/bin/python}
fi
if [ "$MODE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "device_check: nvidia-smi works but this torch ($("$PY" -c 'import torch; print(torch.__version__)')) " \
         "cannot use CUDA: install a CUDA build (pip install --force-reinstall torch) and rerun." >&2
    exit 3
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
run_step() {  # name, command...: stdout to $WORK/name.json, log to $WORK/name.log, status to $WORK/name.rc
    local name=$1; shift
    echo "device_check: $name ..." >&2
    timeout "$STEP_TIMEOUT" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log"
    echo $? >"$WORK/$name.rc"
}

if [ "$MODE" = cuda ]; then
    QUICK=(); DEV=cuda
else
    QUICK=(--quick); DEV=cpu
fi
if [ "$SKIP_TESTS" = 0 ]; then
    if [ "$MODE" = cuda ]; then TESTS=(tests); else TESTS=(tests/models/test_inference.py); fi
    WM_TEST_DEVICE=$DEV timeout "$STEP_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider \
        --junitxml "$WORK/junit.xml" "${TESTS[@]}" >"$WORK/tests.log" 2>&1
    echo $? >"$WORK/tests.rc"
fi
run_step precision "$PY" -m benchmarks.studies.precision --device "$DEV" "${QUICK[@]}"
for dtype in fp32 bf16; do
    run_step "dino_size_$dtype" "$PY" -m benchmarks.studies.dino_size --device "$DEV" --dtype "$dtype" "${QUICK[@]}"
done

"$PY" - "$WORK" "$OUT" "$MODE" <<'EOF'
import json, platform, subprocess, sys, xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import torch

work, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def tail(path, n=40):
    return path.read_text(errors="replace").splitlines()[-n:] if path.is_file() else None
result = {"written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": mode,
          "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
          "torch": torch.__version__, "cuda": torch.version.cuda,
          "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
          "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
          "steps": {}}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    result["device_memory_gib"] = round(props.total_memory / 2**30, 1)
    result["compute_capability"] = f"{props.major}.{props.minor}"
if (work / "tests.rc").is_file():
    step = {"exit_status": int((work / "tests.rc").read_text()), "log_tail": tail(work / "tests.log", 30)}
    if (work / "junit.xml").is_file():
        suite = ET.parse(work / "junit.xml").getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        step.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
        step["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                          if c.find("failure") is not None or c.find("error") is not None]
    result["steps"]["tests"] = step
for rc in sorted(work.glob("*.rc")):
    name = rc.stem
    if name == "tests":
        continue
    step = {"exit_status": int(rc.read_text())}
    try:
        step["result"] = json.loads((work / f"{name}.json").read_text())
    except (OSError, ValueError):
        step["log_tail"] = tail(work / f"{name}.log")
    result["steps"][name] = step
out.write_text(json.dumps(result, indent=1))
bad = [k for k, v in result["steps"].items() if v["exit_status"] != 0]
print(f"device_check: wrote {out} ({result['device']}); steps failed: {bad or 'none'}", file=sys.stderr)
EOF
