#!/usr/bin/env bash
# irh-fast against lm-eval's hf backend on the five workloads in benchmarks/, each backend in its
# own process, fp32, batch 16, the default model loaded from its GGUF file as an lm-eval user
# loads it (pretrained=DIR,gguf_file=FILE: hf dequantises it on every load, irh-fast loads the
# converted copy `irh run` keeps). Writes one summary per workload and a Markdown table:
#
#   scripts/bench_workloads.sh [OUT_DIR]        # default: $TMPDIR/irh-bench-workloads (~25 min on an idle 2-core machine)
#
# Run it on an otherwise idle machine: both backends' times are wall-clock. Needs the data
# (`irh data fetch bbl mmlu`). Extra arguments after OUT_DIR go to every `irh bench` call
# (e.g. --limit 4 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${TMPDIR:-/tmp}/irh-bench-workloads}
shift || true
IRH=${IRH:-irh}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
WORKLOADS=(a_bbl_many_options b_bbl_default c_short_few_options d_listed_options e_mmlu_letters)
started=$(date +%s)
pairs=()
for name in "${WORKLOADS[@]}"; do
    echo "== $name ($(( $(date +%s) - started )) s so far)" >&2
    "$IRH" bench --workload "benchmarks/$name.py" --dtype float32 --batch-size 16 --from-gguf \
        --json-out "$OUT/$name.json" "$@" | tee "$OUT/$name.md"
    pairs+=("$name=$OUT/$name.json")
done
"${PYTHON:-python}" -m harness.bench table "${pairs[@]}" > "$OUT/table.md.part"
mv "$OUT/table.md.part" "$OUT/table.md"
echo "== all five in $(( $(date +%s) - started )) s; table in $OUT/table.md" >&2
cat "$OUT/table.md"
