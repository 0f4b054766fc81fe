#!/usr/bin/env bash
# The main job: set-up, then ConKD end to end on the ReDial data this machine can reach
# (../shared/data when present, otherwise the official ReDial download):
#   1. the zoo family (rec teacher, dialogue teacher, soft and hard students): reused when present,
#      fetched when a release is configured, otherwise built from zoo/conkd/recipe.py;
#   2. eval_model of zoo:conkd/soft on the test fold (recommendation + response metrics);
#   3. a short scripted conversation with zoo:conkd/soft showing its recommendations.
# Everything lands in runs/main (override with CONKD_RUN_DIR). Re-running reuses the built models.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
VENV="${CONKD_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
RUN_DIR="${CONKD_RUN_DIR:-$ROOT/runs/main}"
DATA="$RUN_DIR/data"
mkdir -p "$RUN_DIR"
SHARED="${CONKD_SHARED_DATA:-$ROOT/../shared/data}"
if [ -z "${CONKD_REDIAL_PATH:-}" ] && [ -f "$SHARED/redial/train_data.jsonl" ]; then
    export CONKD_REDIAL_PATH="$SHARED/redial"
    [ -f "$SHARED/redial-meta/kg.json" ] && export CONKD_REDIAL_META_PATH="$SHARED/redial-meta"
fi
echo "[main] ReDial source: ${CONKD_REDIAL_PATH:-official download}; KG: ${CONKD_REDIAL_META_PATH:-none}"
start=$(date +%s)

echo "[main] step 1/3: the ConKD model family in $DATA/models/conkd"
python -m parlai_conkd.zoo.conkd.builder ensure -dp "$DATA"

echo "[main] step 2/3: parlai eval_model -mf zoo:conkd/soft on the test fold (${CONKD_EVAL_EXAMPLES:-400} examples)"
parlai eval_model -t redial_crs -dt test -mf zoo:conkd/soft -dp "$DATA" \
    --skip-generation false --inference greedy -bs 32 --num-examples "${CONKD_EVAL_EXAMPLES:-400}" \
    --report-filename "$RUN_DIR/eval_soft.json" 2>&1 | grep -E "^\{|REPORT|rer@|Finished" || true

echo "[main] step 3/3: a scripted conversation with zoo:conkd/soft"
printf '%s\n' \
    "Hi! I loved The Shining (1980) and other scary movies. Any suggestions?" \
    "I have seen that one. Something more recent maybe?" \
    "Thanks, I will check it out!" \
  | parlai interactive -mf zoo:conkd/soft -dp "$DATA" --show-recs 5 --show-gates true 2>/dev/null \
  | sed "s/^Enter Your Message: *//" | grep -v -E "^$| INFO  |^Enter \[DONE\]" || true
echo "[main] done in $(( $(date +%s) - start ))s; report: $RUN_DIR/eval_soft.json"
