#!/usr/bin/env bash
# Prepare, here, what `scripts/device_check.sh --carried` needs on the lent GPU machine,
# which reaches no network: the wheels for Python 3.12 on x86-64 that its image lacks.
#
#   scripts/prepare_device_wheels.sh [--dir .whl] [--python PY] [--python-version 3.12]
#
# That image (/work/.library/device/KINDS.md, "Python packages already there") has
# Python 3.12 with torch (CUDA), numpy, pillow, msgpack, httpx, prometheus-client,
# einops, scipy, matplotlib, pyyaml, tqdm, pytest and pytest-timeout, but not the
# server's fastapi, uvicorn, pydantic, pydantic-settings or starlette. This script:
#
# 1. downloads those four and their whole dependency closure as cp312 manylinux x86-64
#    wheels into DIR (default .whl/, ignored by git), at the versions installed in PY
#    (default .venv/bin/python: the versions the suite passed with here), else the
#    newest that satisfy pyproject.toml;
# 2. checks the set with `pip install --dry-run --no-index` for that target (Python
#    3.12, cp312, manylinux x86-64, into an empty --target, as on the device): every
#    requirement must resolve from DIR alone, one version of each;
# 3. checks the size: DIR plus the working tree that travels must stay under 64 MiB.
#
# Prints what it carries and exits non-zero if a check fails. --python-version 3.11 makes
# the same set for Python 3.11 (the CPU rehearsal here: docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.whl
PY=${PY:-.venv/bin/python}
PYVER=3.12
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --python-version) PYVER=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "prepare_device_wheels: unknown argument $1" >&2; exit 2 ;;
    esac
done
log() { echo "prepare_device_wheels: $*" >&2; }

# The server's needs that the device image lacks, with pyproject.toml's lower bounds.
NEEDS=("fastapi>=0.110" "uvicorn>=0.27" "pydantic>=2.6" "pydantic-settings>=2.2")
TARGET=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

# Pin each to the version tested here, when PY has it.
reqs=()
for need in "${NEEDS[@]}"; do
    name=${need%%[><=]*}
    ver=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    reqs+=("${ver:+$name==$ver}")
    [ -z "$ver" ] && reqs[-1]=$need
done
pins=()
if [ -x "$PY" ]; then  # the closure's versions too (pydantic-core, starlette, ...), so pip picks what ran here
    while IFS= read -r line; do pins+=("$line"); done < <("$PY" - <<'EOF'
import importlib.metadata as m
for d in ("pydantic-core", "starlette", "typing-extensions", "typing-inspection", "annotated-types",
          "annotated-doc", "anyio", "idna", "sniffio", "h11", "click", "python-dotenv"):
    try:
        print(f"{d}=={m.version(d)}")
    except m.PackageNotFoundError:
        pass
EOF
)
fi
constraints=$(mktemp); trap 'rm -f "$constraints"' EXIT
printf '%s\n' "${pins[@]}" >"$constraints"

mkdir -p "$DIR"
rm -f "$DIR"/*.whl
log "downloading ${reqs[*]} and their dependencies for cp${PYVER/./} manylinux x86-64 into $DIR"
python3 -m pip download -q "${TARGET[@]}" -c "$constraints" -d "$DIR" "${reqs[@]}" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

log "checking: pip install --dry-run --no-index from $DIR alone, for Python $PYVER x86-64"
check=$(mktemp -d); trap 'rm -rf "$check" "$constraints"' EXIT
python3 -m pip install --dry-run --no-index --find-links "$DIR" "${TARGET[@]}" --target "$check" \
    "${reqs[@]}" 2>&1 | tee "$check/dry-run.log" | grep -E '^Would install' >&2 \
    || { cat "$check/dry-run.log" >&2; log "the carried set does not resolve on its own"; exit 1; }
dups=$(for w in "$DIR"/*.whl; do basename "$w"; done | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dups" ] || { log "two versions of: $dups (keep one: the device install stops otherwise)"; exit 1; }

wheels_kib=$(du -sk "$DIR" | cut -f1)
# The tree that travels: tracked files plus untracked files git does not ignore.
tree_kib=$(git ls-files -z --cached --others --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total_kib=$((wheels_kib + tree_kib))
n=0; for _ in "$DIR"/*.whl; do n=$((n + 1)); done
log "$n wheels, $((wheels_kib / 1024)) MiB; working tree $((tree_kib / 1024)) MiB;" \
    "together $((total_kib / 1024)) MiB of the 64 MiB that may travel"
[ "$total_kib" -lt $((64 * 1024)) ] || { log "over 64 MiB"; exit 1; }
ls "$DIR"
