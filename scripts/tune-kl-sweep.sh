#!/usr/bin/env bash
# The small sweep behind `irh tune --kl-weight`'s default: one method, one task, a few λ.
# Each λ is tuned with the same seed (same split and batches) and evaluated on the same
# held-out phrasings and documents, as is the base model; the table gives, per λ, the seen
# and unseen means and stds and the gap.
# Usage: bash scripts/tune-kl-sweep.sh [OUT] [METHOD] [TASK] [STEPS] [λ ...]
set -euo pipefail
OUT=${1:-reports/kl-sweep}
METHOD=${2:-prompt+kl}
TASK=${3:-bbl.strategyqa}
STEPS=${4:-30}
shift $(( $# < 4 ? $# : 4 ))
if [ $# -gt 0 ]; then LAMBDAS=("$@"); else LAMBDAS=(0 0.3 1 3); fi
LIMIT=20
BASE=$(python -c "from harness.backends.models import default_model_dir; print(default_model_dir())")
FAMILY=${METHOD%%+*}
BACKEND=$([ "$FAMILY" = lora ] && echo irh-fast || echo hf)
for L in "${LAMBDAS[@]}"; do
  NAME="${FAMILY}-kl${L}"
  M=$([ "$L" = 0 ] && echo "$FAMILY" || echo "$FAMILY+kl")
  KL=(); [ "$L" = 0 ] || KL=(--kl-weight "$L")
  ADAPTER="$OUT/adapters/$NAME"
  if [ ! -f "$ADAPTER/tune.json" ]; then
    irh tune --method "$M" "${KL[@]}" --tasks "$TASK" --steps "$STEPS" --eval-limit "$LIMIT" --out "$ADAPTER"
  elif ! grep -q '"status": "complete"' "$ADAPTER/tune.json"; then
    irh tune --resume "$ADAPTER"
  fi
  if ! ls "$OUT/runs/$NAME"/*/run.json >/dev/null 2>&1; then
    irh run --model "$BACKEND:pretrained=$BASE,peft=$ADAPTER" --tasks "$TASK" --limit "$LIMIT" --seed 1234 --reports-dir "$OUT/runs/$NAME" --no-report
  fi
done
# The base model on the same phrasings and documents, seen flags from the first adapter's split.
FIRST="$OUT/adapters/${FAMILY}-kl${LAMBDAS[0]}"
if ! ls "$OUT/runs/base"/*/run.json >/dev/null 2>&1; then
  irh run --model "irh-fast:pretrained=$BASE" --seen-from "$FIRST" --tasks "$TASK" --limit "$LIMIT" --seed 1234 --reports-dir "$OUT/runs/base" --no-report
fi
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from harness.report.sources import load_run
from harness.tune.summary import render_table, task_rows
out = Path(sys.argv[1])
rows = []
for runs in sorted((out / "runs").iterdir()):
    run = sorted(d for d in runs.iterdir() if (d / "run.json").exists())[-1]
    rows += [r for r in task_rows(runs.name, load_run(run).phrasings) if r.task != "overall (macro)"]
table = render_table(rows)
(out / "sweep.md").write_text(table + "\n")
print(table)
PY
