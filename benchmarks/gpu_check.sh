#!/usr/bin/env bash
# bash benchmarks/gpu_check.sh [OUT_DIR]
# Every GPU figure docs/performance.md lists, in order of importance, each `python -m dti.bench` command with a
# time limit of its own (BENCH_TIMEOUT seconds, default 600), so one slow or failing figure does not cost the rest.
# Random-weight models (model.random_init=true): no hub access. Without CUDA each command runs the tiny model of
# its family instead (a rehearsal: the figures mean nothing). Writes OUT_DIR/<name>.json and .log, and prints a
# table of the figures at the end (OUT_DIR/summary.md).
set -uo pipefail
out=${1:-benchmarks/results/gpu_check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

bench() {  # bench NAME MODE OVERRIDES...
  local name=$1; shift
  echo "== $name: python -m dti.bench $*"
  # BENCH_EXTRA: overrides added to every command (a CPU rehearsal: "train.steps=10 bench.steps=2 bench.warmup=1")
  timeout "${BENCH_TIMEOUT:-600}" python -m dti.bench "$@" model.random_init=true ${BENCH_EXTRA:-} bench.out="$out/$name.json" \
    >"$out/$name.log" 2>&1 || echo "   $name failed or timed out (exit $?): see $out/$name.log"
}

bench sdxl_train          train   model=sdxl                 # the recipe: batch 4, 768 px
bench sdxl_sample         sample  model=sdxl sampler.batch_size=16
bench sdxl_train_pack4    train   model=sdxl pack=4
bench sdxl_concept        concept model=sdxl
bench sdxl_concept_pack4  concept model=sdxl pack=4
bench sdxl_train_compiled train   model=sdxl model.compile=true
bench sana_train          train   model=sana_1.6b
bench wan_train           train   model=wan_1.3b
bench sd15_train          train   model=sd15

python - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
keys = ("device", "model", "median_s", "seconds_per_concept_step", "seconds_per_image",
        "wall_s_process_start_to_embeddings", "concepts_per_hour", "peak_memory_gib")
rows = ["| figure | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 1)]
for path in sorted(out.glob("*.json")):
    data = json.loads(path.read_text())
    cells = [f"{data[k]:.4g}" if isinstance(data.get(k), float) else str(data.get(k, "")) for k in keys]
    rows.append(f"| {path.stem} | " + " | ".join(cells) + " |")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
