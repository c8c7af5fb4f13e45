#!/usr/bin/env bash
# Both GPU benchmarks in one command, for a machine lent with one GPU for a few minutes:
#
#     bash benchmarks/gpu.sh [OUT]              # OUT: logs and summaries (default /tmp/gpu-bench)
#
# 1. benchmarks/train_gpu.py (the training entry point at 11B widths, issue 9), then
# 2. benchmarks/search_gpu.py (search at 11B widths, issue 10),
# each under its own time limit (TRAIN_S, SEARCH_S seconds: together under a 10-minute command), so
# a phase that fails or hangs leaves its log and the other phase still runs. Both write their
# figures into benchmarks/README.md (copied to OUT). OUT gets env.txt (versions, GPU), train.log,
# search.log, train/ (summary.json, the trainer's logs and metrics, the profiled steps' trace,
# gzipped); the bulky run data (model folder, shards, checkpoints) stays in WORK. The two final
# tables are printed at the end. Environment: PYTHON (default: python on PATH), WORK, TRAIN_S, SEARCH_S,
# WHEELS (a folder of wheels carried to the machine, e.g. transformers and liger-kernel: installed
# first, offline, without dependencies).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/gpu-bench}
WORK=${WORK:-/tmp/gpu-bench-work}
PY=${PYTHON:-$(command -v python || command -v python3)}
TRAIN_S=${TRAIN_S:-320}
SEARCH_S=${SEARCH_S:-240}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# no network on the machine: nothing may wait on a hub lookup; DeepSpeed on CUDA, never a silent CPU
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false DS_ACCELERATOR=cuda

started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }

if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps "$WHEELS"/*.whl \
        > "$OUT/wheels.log" 2>&1 || echo "gpu.sh: installing the wheels in $WHEELS failed (see $OUT/wheels.log)"
fi

"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import importlib, platform, sys
import torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})")
for name in ("transformers", "deepspeed", "liger_kernel", "triton", "tokenizers", "PIL", "pyarrow"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001 - a report: say what is missing
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
if not torch.cuda.is_available():
    sys.exit("no CUDA device")
# everything both benchmarks import, before minutes are spent on the first one
import pipeline.search.core, pipeline.shards, pipeline.train.profiling, pipeline.train.train  # noqa: E401,F401
from transformers import MllamaForConditionalGeneration, MllamaProcessor  # noqa: F401
from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil  # noqa: F401
import deepspeed  # noqa: F401
free, total = torch.cuda.mem_get_info()
print(f"GPU {torch.cuda.get_device_name()}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free), "
      f"capability {torch.cuda.get_device_capability()}")
EOF
env_rc=$?
cat "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.max.sm,power.limit --format=csv >> "$OUT/env.txt" 2>&1
if [ $env_rc -ne 0 ]; then
    echo "gpu.sh: the environment check failed (above: no GPU, or a module the benchmarks import); nothing run"
    exit 2
fi

# the trainer's own limit (--run-timeout) comes first: train_gpu stops it cleanly and still measures
# the baseline; the phase limit is the last resort (torchrun gets SIGTERM and stops its worker)
echo "== train_gpu (limit ${TRAIN_S} s) =="
timeout -k 60 "$TRAIN_S" "$PY" benchmarks/train_gpu.py --out "$WORK/train" --compare --budget-s 130 \
    --run-timeout $((TRAIN_S - 90)) --readme > "$OUT/train.log" 2>&1
train_rc=$?
echo "train_gpu: exit $train_rc after $(elapsed) s (124: stopped at its limit); log $OUT/train.log"
mkdir -p "$OUT/train"
cp "$WORK"/train/summary.json "$WORK"/train/run-*.log "$OUT/train/" 2>/dev/null
for run in "$WORK"/train/run-*/; do
    [ -d "$run" ] || continue
    name=$(basename "$run")
    [ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$OUT/train/$name-metrics.jsonl"
    [ -f "$run/profile/trace-rank0.json" ] && gzip -c "$run/profile/trace-rank0.json" > "$OUT/train/$name-trace.json.gz"
done
# a worker that outlived its torchrun (killed at the limit) would hold the GPU through the search
for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m pipeline.train"; then
        echo "gpu.sh: stopping a leftover trainer process $pid"
        kill -9 "$pid"
    fi
done

echo "== search_gpu (limit ${SEARCH_S} s) =="
timeout -k 30 "$SEARCH_S" "$PY" benchmarks/search_gpu.py --repeat 2 --readme > "$OUT/search.log" 2>&1
search_rc=$?
echo "search_gpu: exit $search_rc after $(elapsed) s (124: stopped at its limit); log $OUT/search.log"
cp benchmarks/README.md "$OUT/README.md"

table() {  # the script's final table (from its first line on), else the end of its log
    if grep -q "$2" "$1"; then sed -n "/$2/,\$p" "$1"; else echo "(no table: the end of $1)"; tail -n 40 "$1"; fi
}
echo
echo "================ train_gpu ================"
table "$OUT/train.log" "^train_gpu: "
if grep -q "failed:" "$OUT/train.log"; then
    for log in "$OUT"/train/run-*.log; do echo "--- end of $log"; tail -n 25 "$log"; done
fi
echo
echo "================ search_gpu ================"
table "$OUT/search.log" "^budgets "
echo
echo "gpu.sh: $(elapsed) s in all; train_gpu exit $train_rc, search_gpu exit $search_rc; files in $OUT"
[ $train_rc -eq 0 ] && [ $search_rc -eq 0 ]
