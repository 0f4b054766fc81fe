#!/usr/bin/env bash
# The GPU check of issue #17, at most ~8 minutes on one H200: set-up, a side-by-side benchmark on a
# DialoGPT-small-shaped random GPT-2, a short fp16 student training, the modern recipe's LoRA + bf16
# options on a random Qwen2.5-0.5B-shaped model (issue #25; peak GPU memory) and the GPU tests. Prints
# a table and writes projects/conkd/results/gpu_check.json (and copies it and the logs to $OUT when set).
#
#   bash scripts/gpu_check.sh --prepare            # where pip reaches a registry: wheels + ReDial -> .gpu-carry/
#   bash scripts/gpu_check.sh                      # on the GPU machine (copy the checkout with .gpu-carry/ there)
#   bash scripts/gpu_check.sh --device cpu --quick # the CPU dry run: tiny model, same code path
#
# Other arguments go to projects/conkd/gpu_check.py (--budget-s, --workdir, --out, --skip).
# The GPU machine is bare and offline: its python3 holds torch (CUDA), transformers, numpy, pytest,
# ... but not ParlAI. The set-up installs, from .gpu-carry/wheels and without any index, ParlAI 1.7.2
# (--no-deps, as scripts/setup.sh does) and the few runtime packages that image lacks, then this
# plugin (editable). ReDial comes from .gpu-carry/data (the shared copy, which does not travel).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${CONKD_GPU_CARRY:-$ROOT/.gpu-carry}"
# the interpreter: $CONKD_PYTHON, else $CONKD_VENV's or ./.venv's (scripts/setup.sh), else python3
# (on the GPU machine: the image's, which holds torch with CUDA)
if [ -n "${CONKD_PYTHON:-}" ]; then PY="$CONKD_PYTHON"
elif [ -n "${CONKD_VENV:-}" ]; then PY="$CONKD_VENV/bin/python"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
log() { printf '[gpu_check] %s\n' "$*" >&2; }

prepare() {
    local data="${CONKD_SHARED_DATA:-$ROOT/../shared/data}" version
    version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
    mkdir -p "$CARRY/wheels" "$CARRY/data"
    log "wheels (pure Python, the versions this environment tested) -> $CARRY/wheels"
    "$PY" -m pip wheel --no-deps -q -w "$CARRY/wheels" "parlai==1.7.2" "iopath==$(version iopath)" \
        "nltk==$(version nltk)" "pytest-regressions==$(version pytest-regressions)" \
        "pytest-datadir==$(version pytest-datadir)" "setuptools==$(version setuptools)"
    # LoRA (issue #25, the modern step and the LoRA GPU tests): peft and what it needs beyond torch
    "$PY" -m pip wheel --no-deps -q -w "$CARRY/wheels" "peft==$(version peft)" \
        "accelerate==$(version accelerate)" "psutil==$(version psutil)"
    [ -f "$data/redial/train_data.jsonl" ] || { log "no ReDial at $data (set CONKD_SHARED_DATA)"; exit 1; }
    log "ReDial and the movie KG -> $CARRY/data"
    rm -rf "$CARRY/data/redial" "$CARRY/data/redial-meta"
    cp -r "$data/redial" "$data/redial-meta" "$CARRY/data/"
    du -sh "$CARRY"
    log "now copy this checkout with .gpu-carry/ to the GPU machine and run 'bash scripts/gpu_check.sh' there (allow it 9 minutes)"
}

setup() {
    if "$PY" -c 'import parlai, parlai_conkd, iopath, nltk, pkg_resources' 2>/dev/null; then
        log "set-up: ParlAI and parlai-conkd already importable by $PY"
        return
    fi
    local wheels="$CARRY/wheels"
    ls "$wheels"/parlai-1.7.2-*.whl >/dev/null 2>&1 || {
        log "set-up: no wheels in $wheels and ParlAI is not installed: run 'bash scripts/gpu_check.sh --prepare'"
        log "where pip can reach a registry, and copy .gpu-carry/ to this machine"; exit 1; }
    local pip=("$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check)
    if ! "$PY" -c 'import pkg_resources' 2>/dev/null; then  # parlai/core/opt.py imports it (setuptools<81)
        "${pip[@]}" "$wheels"/setuptools-*.whl
    fi
    "${pip[@]}" "$wheels"/parlai-*.whl "$wheels"/iopath-*.whl "$wheels"/nltk-*.whl \
        "$wheels"/pytest_regressions-*.whl "$wheels"/pytest_datadir-*.whl
    # optional (LoRA): installed when carried and missing
    for pkg in psutil accelerate peft; do
        if ! "$PY" -c "import $pkg" 2>/dev/null && ls "$wheels"/$pkg-*.whl >/dev/null 2>&1; then
            "${pip[@]}" "$wheels"/$pkg-*.whl
        fi
    done
    "${pip[@]}" --no-build-isolation -e "$ROOT"
    "$PY" -c 'import parlai_conkd._startup, parlai.core.params' || { log "set-up failed"; exit 1; }
    log "set-up done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
}

data() {
    local shared
    for shared in "$CARRY/data" "${CONKD_SHARED_DATA:-$ROOT/../shared/data}"; do
        if [ -f "$shared/redial/train_data.jsonl" ]; then
            export CONKD_SHARED_DATA="$shared"
            export CONKD_REDIAL_PATH="${CONKD_REDIAL_PATH:-$shared/redial}"
            export CONKD_REDIAL_META_PATH="${CONKD_REDIAL_META_PATH:-$shared/redial-meta}"
            return
        fi
    done
    log "no ReDial in $CARRY/data or ../shared/data: run --prepare, or set CONKD_REDIAL_PATH"; exit 1
}

if [ "${1:-}" = "--prepare" ]; then prepare; exit 0; fi
cd "$ROOT"
setup_log="${OUT:-/tmp}/setup.log"
setup 2>&1 | tee "$setup_log"
data
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
exec "$PY" "$ROOT/projects/conkd/gpu_check.py" "$@"
