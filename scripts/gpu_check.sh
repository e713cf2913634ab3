#!/usr/bin/env bash
# The CUDA check of the engine, for a GPU machine that has torch but no cargo and no models
# (the device tool's machines): a tcomm binary built elsewhere, a checkpoint folder holding a
# model's config.json and tokenizer (scripts/make_random_checkpoint.py export), and this checkout.
#
#   scripts/gpu_check.sh TCOMM_BINARY CONFIG_DIR OUT_DIR [BENCH_ARGS...]
#
# 1. fills CONFIG_DIR's copy with seeded random bf16 weights (make_random_checkpoint.py fill);
# 2. compares this engine's last-position logits on CUDA (f32) with transformers on the CPU (f32)
#    for three texts (scripts/check_logits.py --tcomm-device cuda);
# 3. runs `tcomm bench decode --device cuda --dtype bf16` against transformers on the same GPU.
# Every step's output goes to OUT_DIR (check-*.txt, bench.json, bench.log).
set -uo pipefail
tcomm="$(realpath "$1")"; config="$2"; out="$3"; shift 3
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" TCOMM_ROOT="$root" PYTHONUNBUFFERED=1
mkdir -p "$out"
model="$(mktemp -d)/$(basename "$config")"
cp -r "$config" "$model"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"
start=$SECONDS
"$python" "$root/scripts/make_random_checkpoint.py" fill --out "$model" --dtype bf16 2>&1 | tail -n 1
echo "fill: $((SECONDS - start)) s"

status=0
i=0
for text in "The quick brown fox jumps over the lazy dog." \
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May." \
            "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)"; do
    i=$((i + 1))
    "$python" "$root/scripts/check_logits.py" --model "$model" --text "$text" --tcomm "$tcomm" \
        --tcomm-device cuda --atol 2e-3 >"$out/check-$i.txt" 2>&1 || status=1
    tail -n 1 "$out/check-$i.txt"
done

start=$SECONDS
"$tcomm" bench decode --model "$model" --device cuda --dtype bf16 --python "$python" --json "$@" \
    >"$out/bench.json" 2>"$out/bench.log" || status=1
echo "bench: $((SECONDS - start)) s"
tail -n 5 "$out/bench.log"
head -c 4000 "$out/bench.json"; echo
exit $status
