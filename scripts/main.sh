#!/usr/bin/env bash
# The main job: set-up, then ConKD end to end on the ReDial data this machine can reach
# (../shared/data when present, otherwise the official ReDial download):
#   1. the zoo family (rec teacher, dialogue teacher, soft and hard students): reused when present,
#      fetched when a release is configured, otherwise built from parlai_conkd/zoo/conkd/recipe.py;
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

EXAMPLES="${CONKD_EVAL_EXAMPLES:--1}"
echo "[main] step 2/3: parlai eval_model on the test fold (${EXAMPLES/#-1/all} examples): zoo:conkd/rec_teacher, zoo:conkd/soft"
parlai eval_model -t redial_crs:rec -dt test -mf zoo:conkd/rec_teacher -dp "$DATA" -bs 128 \
    --report-filename "$RUN_DIR/eval_rec_teacher.json" > "$RUN_DIR/eval_rec_teacher.log" 2>&1
# the soft student decodes as saved with it (item-aware class decoding; see projects/conkd/README.md)
parlai eval_model -t redial_crs -dt test -mf zoo:conkd/soft -dp "$DATA" \
    --skip-generation false -bs 64 --num-examples "$EXAMPLES" \
    --report-filename "$RUN_DIR/eval_soft.json" > "$RUN_DIR/eval_soft.log" 2>&1

echo "[main] step 3/3: a scripted conversation with zoo:conkd/soft"
printf '%s\n' \
    "Hi! I loved The Shining (1980) and other scary movies. Any suggestions?" \
    "I have seen that one. Something more recent maybe?" \
    "Thanks, I will check it out!" \
  | parlai interactive -mf zoo:conkd/soft -dp "$DATA" --show-recs 5 --show-gates true 2>/dev/null \
  | sed "s/^Enter Your Message: *//" | grep -v -E "^$| INFO  | WARNING  |^Enter \[DONE\]" || true
python - "$RUN_DIR" <<'EOF'
import json, os, sys
run = sys.argv[1]
rec = json.load(open(os.path.join(run, 'eval_rec_teacher.json')))['report']
soft = json.load(open(os.path.join(run, 'eval_soft.json')))['report']
print(f"[main] test fold, {int(rec['exs'])} rec examples / {int(soft['exs'])} recommender turns:")
print(f"[main]   rec teacher  R@1 {rec['new_recall@1']:.3f}  R@10 {rec['new_recall@10']:.3f}  R@50 {rec['new_recall@50']:.3f}")
print(f"[main]   soft student ReR@10 {soft['rer@10']:.3f}  item F1 {soft['item_f1']:.3f}  item ratio {soft['item_ratio']:.3f}"
      f"  Dist-2 {soft['dist_crs-2']:.3f} (per reply; ratio {soft['dist-2']:.3f})  PPL {soft['ppl']:.1f}")
EOF
echo "[main] done in $(( $(date +%s) - start ))s; reports: $RUN_DIR/eval_rec_teacher.json, $RUN_DIR/eval_soft.json"
