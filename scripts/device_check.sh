#!/usr/bin/env bash
# Where do we stand on a GPU? One command on a machine with a CUDA GPU:
#
#   scripts/device_check.sh [--out device_check.json] [--skip-tests]
#   scripts/device_check.sh --carried [--wheels .whl] [--out ...]   # the lent GPU machine (docs/gpu.md)
#   scripts/device_check.sh --cpu [--out ...]     # dry run on a CPU: quick sizes, checks the script
#   PY=/path/to/python scripts/device_check.sh --no-setup ...   # use an installed environment as it is
#
# 1. installs what it needs (scripts/setup.sh: .venv with a CUDA torch and the test extras);
#    with --carried instead: no network, no setup. The image's own Python and torch
#    ($PY, default python3), plus only the wheels carried in --wheels (made here by
#    scripts/prepare_device_wheels.sh), installed with --no-index into a target folder;
# 2. runs the test suite with WM_TEST_DEVICE=cuda (model tests on the GPU), recording the summary;
#    with --carried only the CUDA-relevant tests (tests/models/test_inference.py and the
#    checkpoint tests);
# 3. benchmarks the default model (benchmarks.studies.precision: fp32, bf16, fp16, compiled; agreement with
#    fp32; closed loop) and the DINO-WM-size model (benchmarks.studies.dino_size: native and imported
#    artifacts, paper settings, through the real server) in fp32 and bf16;
# 4. writes ONE JSON with the device name and every figure (default device_check.json).
#
# A step that fails is recorded (its exit status and the tail of its log) and the
# next step still runs, so one broken piece does not hide the others. Each step has a
# time budget (STEP_TIMEOUT, default 1200 s; with --carried its own budget, below, all
# of them within one 10-minute call, the slowest last); a step over budget is killed and
# recorded with exit status 124. Without a CUDA GPU it refuses with exit status 3
# unless --cpu is given.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

OUT=device_check.json
MODE=cuda
SKIP_TESTS=0
SETUP=1
CARRIED=0
WHEELS=.whl
STEP_TIMEOUT=${STEP_TIMEOUT:-1200}
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --cpu) MODE=cpu; shift ;;
        --skip-tests) SKIP_TESTS=1; shift ;;
        --no-setup) SETUP=0; shift ;;
        --carried) CARRIED=1; SETUP=0; shift ;;
        --wheels) WHEELS=$2; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "device_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ "$MODE" = cuda ] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; }; then
    echo "device_check: no CUDA GPU here (nvidia-smi missing or failing). Run it on a GPU machine," \
         "or pass --cpu for a dry run of the script on this CPU." >&2
    exit 3
fi

T_START=$(date +%s)
if [ "$CARRIED" = 1 ]; then
    # The lent machine's image: its python3 holds a CUDA torch, numpy, pillow, httpx, pytest...;
    # the server's own packages come as carried wheels, installed without any index.
    PY=${PY:-python3}
    SITE=$(mktemp -d /tmp/device_check_site.XXXXXX)
    shopt -s nullglob; wheels=("$WHEELS"/*.whl); shopt -u nullglob
    if [ ${#wheels[@]} = 0 ]; then
        echo "device_check: no wheels in $WHEELS: run scripts/prepare_device_wheels.sh here first and carry $WHEELS" >&2
        exit 4
    fi
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}" || { echo "device_check: installing the carried wheels failed" >&2; exit 4; }
    export PYTHONPATH="$SITE:$PWD:$PWD/clients/python/src${PYTHONPATH:+:$PYTHONPATH}"
    missing=$("$PY" - <<'EOF'
import importlib.util
need = ["torch", "numpy", "PIL", "msgpack", "httpx", "prometheus_client", "scipy", "yaml", "tqdm", "matplotlib",
        "pytest", "fastapi", "uvicorn", "pydantic", "pydantic_settings", "starlette", "wm_client", "server"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
    if [ -n "$missing" ]; then
        echo "device_check: missing here even with the carried wheels: $missing" >&2; exit 4
    fi
    echo "device_check: carried ${#wheels[@]} wheels into $SITE ($(( $(date +%s) - T_START )) s)" >&2
elif [ "$SETUP" = 1 ]; then
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
trap 'rm -rf "$WORK" ${SITE:+"$SITE"}' EXIT
# Seconds per step. --carried: one 10-minute call holds them all (tests 75, default model 120,
# DINO-WM size bf16 110, fp32 180: 485 s of steps, plus the install, under 520 s).
# BUDGET_SCALE (default 1) stretches them, for the CPU rehearsal on a loaded 2-core machine.
if [ "$CARRIED" = 1 ]; then
    declare -A BUDGET=([tests]=60 [precision]=100 [dino_size_bf16]=100 [dino_size_fp32]=240)
    for k in "${!BUDGET[@]}"; do BUDGET[$k]=$(awk -v b="${BUDGET[$k]}" -v s="${BUDGET_SCALE:-1}" 'BEGIN { print int(b * s) }'); done
else
    declare -A BUDGET=([tests]=$STEP_TIMEOUT [precision]=$STEP_TIMEOUT [dino_size_bf16]=$STEP_TIMEOUT
                       [dino_size_fp32]=$STEP_TIMEOUT)
fi
run_step() {  # name, command...: stdout to $WORK/name.json, log to $WORK/name.log, status to $WORK/name.rc
    local name=$1; shift
    local t0; t0=$(date +%s)
    echo "device_check: $name (budget ${BUDGET[$name]} s) ..." >&2
    timeout -k 10 "${BUDGET[$name]}" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log"
    echo $? >"$WORK/$name.rc"
    echo $(( $(date +%s) - t0 )) >"$WORK/$name.seconds"
    echo "device_check: $name exit $(cat "$WORK/$name.rc") after $(cat "$WORK/$name.seconds") s" >&2
}

if [ "$MODE" = cuda ]; then
    QUICK=(); DEV=cuda
else
    QUICK=(--quick); DEV=cpu
fi
if [ "$SKIP_TESTS" = 0 ]; then
    if [ "$CARRIED" = 1 ]; then
        TESTS=(tests/models/test_inference.py tests/models/test_dino_wm_enum_pickles.py)
    elif [ "$MODE" = cuda ]; then TESTS=(tests); else TESTS=(tests/models/test_inference.py); fi
    t0=$(date +%s)
    echo "device_check: tests (budget ${BUDGET[tests]} s) ..." >&2
    WM_TEST_DEVICE=$DEV timeout -k 10 "${BUDGET[tests]}" "$PY" -m pytest -q -p no:cacheprovider \
        --junitxml "$WORK/junit.xml" "${TESTS[@]}" >"$WORK/tests.log" 2>&1
    echo $? >"$WORK/tests.rc"
    echo $(( $(date +%s) - t0 )) >"$WORK/tests.seconds"
    echo "device_check: tests exit $(cat "$WORK/tests.rc") after $(cat "$WORK/tests.seconds") s" >&2
fi
if [ "$CARRIED" = 1 ]; then
    # Fit the budgets: the default model without the minutes-long inductor compile and with
    # 10 closed-loop episodes; the DINO-WM-size model at paper settings (300 x 30), in bf16
    # with the imported DINO-WM artifact too, then fp32 (the slowest, about 2.5 PFLOP with
    # both artifacts) with the native one only; each through the real server.
    run_step precision "$PY" -m benchmarks.studies.precision --device "$DEV" --no-compile --episodes 10 "${QUICK[@]}"
    run_step dino_size_bf16 "$PY" -m benchmarks.studies.dino_size --device "$DEV" --dtype bf16 "${QUICK[@]}"
    run_step dino_size_fp32 "$PY" -m benchmarks.studies.dino_size --device "$DEV" --dtype fp32 "${QUICK[@]}"
else
    run_step precision "$PY" -m benchmarks.studies.precision --device "$DEV" "${QUICK[@]}"
    for dtype in fp32 bf16; do
        run_step "dino_size_$dtype" "$PY" -m benchmarks.studies.dino_size --device "$DEV" --dtype "$dtype" "${QUICK[@]}"
    done
fi

"$PY" - "$WORK" "$OUT" "$MODE" "$CARRIED" "$(( $(date +%s) - T_START ))" <<'EOF'
import json, platform, subprocess, sys, xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import torch

work, out, mode, carried, total_s = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
def tail(path, n=40):
    return path.read_text(errors="replace").splitlines()[-n:] if path.is_file() else None
def seconds(name):
    f = work / f"{name}.seconds"
    return int(f.read_text()) if f.is_file() else None
result = {"written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": mode,
          "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
          "torch": torch.__version__, "cuda": torch.version.cuda,
          "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
          "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
          "python": platform.python_version(), "carried_wheels": carried, "total_seconds": total_s, "steps": {}}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    result["device_memory_gib"] = round(props.total_memory / 2**30, 1)
    result["compute_capability"] = f"{props.major}.{props.minor}"
if (work / "tests.rc").is_file():
    step = {"exit_status": int((work / "tests.rc").read_text()), "seconds": seconds("tests"),
            "log_tail": tail(work / "tests.log", 30)}
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
    step = {"exit_status": int(rc.read_text()), "seconds": seconds(name)}
    if step["exit_status"] in (124, 137):
        step["timed_out"] = True
    try:
        step["result"] = json.loads((work / f"{name}.json").read_text())
    except (OSError, ValueError):
        step["log_tail"] = tail(work / f"{name}.log")
    result["steps"][name] = step
out.write_text(json.dumps(result, indent=1))
bad = [k for k, v in result["steps"].items() if v["exit_status"] != 0]
print(f"device_check: wrote {out} ({result['device']}); steps failed: {bad or 'none'}", file=sys.stderr)
EOF
