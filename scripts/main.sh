#!/usr/bin/env bash
# The main job: set-up, then an end-to-end run on the ReDial data this machine can reach
# (../shared/data when present, otherwise the official ReDial download).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
VENV="${CONKD_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
RUN_DIR="${CONKD_RUN_DIR:-$ROOT/runs/main}"
mkdir -p "$RUN_DIR"
SHARED="${CONKD_SHARED_DATA:-$ROOT/../shared/data}"
if [ -z "${CONKD_REDIAL_PATH:-}" ] && [ -f "$SHARED/redial/train_data.jsonl" ]; then
    export CONKD_REDIAL_PATH="$SHARED/redial" CONKD_REDIAL_META_PATH="$SHARED/redial-meta"
fi
echo "[main] ReDial source: ${CONKD_REDIAL_PATH:-official download}"
parlai display_data -t redial_crs:readable -dp "$RUN_DIR/data" -n 3
parlai train_model -t redial_crs -m transformer/generator -mf "$RUN_DIR/smoke/model" -dp "$RUN_DIR/data" \
    --n-layers 1 --embedding-size 32 --ffn-size 64 --n-heads 2 -bs 16 --num-epochs 0.05 \
    --truncate 64 --text-truncate 64 --label-truncate 32 --skip-generation true
parlai eval_model -t redial_crs -mf "$RUN_DIR/smoke/model" -dp "$RUN_DIR/data" --num-examples 50 \
    --label-truncate 32 --text-truncate 64 --truncate 64
