#!/usr/bin/env bash
# The identifiability benchmark at the paper's large sizes (512 and 1024 latents) on a GPU machine
# that has torch but no cargo (the device tool's machines). On this project's 2-core CPU machine a
# 24,000-step training takes about 8 h at 512 latents and over 30 h at 1024.
#
#   scripts/gpu_identifiability.sh TCOMM_BINARY AUTOENCODER_TEST_BINARY OUT_DIR [SECONDS]
#
# Build both here and carry them (stripped, they fit the 64 MiB a call may carry):
#   cargo build --release -p experiments && cp target/release/tcomm runs/gpu/
#   cargo test -p thoughtcomm --test autoencoder --no-run   # prints the test binary's path
#   cp <that path> runs/gpu/autoencoder-test && strip runs/gpu/autoencoder-test
#
# 1. runs the CUDA test of the autoencoder (training on CUDA follows the CPU; `#[ignore]`d on CPU);
# 2. runs `tcomm identifiability --device cuda` at 512 and 1024 latents, seed 0 first, then seeds
#    1-4, while SECONDS (default 500) last: a run starts only if the last one of its size would
#    still fit. lambda scales as 1/k^2 from the settings measured on the CPU (128: 8e-5, 256: 2e-5),
#    three hidden layers of the state's size (the default), 32 Jacobian columns, 24,000 steps.
# Outputs (few files, as the device tool returns at most 8): OUT_DIR/gpu.txt, test.txt,
# ident.jsonl (one JSON object per finished run), ident.log.
set -uo pipefail
tcomm="$(realpath "$1")"; test_binary="$(realpath "$2")"; out="$3"; budget="${4:-500}"
python="${PYTHON:-python3}"
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

"$test_binary" --ignored --exact cuda_training_follows_the_cpu >"$out/test.txt" 2>&1
echo "CUDA autoencoder test: exit $? (test.txt)"

declare -A lambda=([512]=5e-6 [1024]=1.25e-6)
declare -A took=()
for seed in 0 1 2 3 4; do
    for k in 512 1024; do
        left=$((budget - SECONDS))
        if [ "$left" -le 0 ] || { [ -n "${took[$k]:-}" ] && [ "${took[$k]}" -ge "$left" ]; }; then
            echo "latents $k seed $seed: skipped (the last took ${took[$k]:-?} s, $left s left)"
            continue
        fi
        start=$SECONDS
        echo "== latents $k seed $seed" >>"$out/ident.log"
        if timeout "$left" "$tcomm" identifiability --device cuda --threads 4 --latent-dim "$k" --lambda "${lambda[$k]}" \
            --steps 24000 --jacobian-columns 32 --no-ablation --seed "$seed" --json \
            >"$out/run.json" 2>>"$out/ident.log"; then
            cat "$out/run.json" >>"$out/ident.jsonl"
            "$python" -c 'import json, sys; a = sys.argv; r = json.load(open(a[1])); s = r["sparse"]
print("latents %s seed %s: MCC %.3f (shared %.3f, private %.3f), F1 %.3f, %s s" % (a[2], a[3], s["mcc_all"], r["mcc_shared"], r["mcc_private"], r["structure_f1"], a[4]))' \
                "$out/run.json" "$k" "$seed" "$((SECONDS - start))"
        else
            echo "latents $k seed $seed: did not finish within $left s (ident.log)"
        fi
        took[$k]=$((SECONDS - start))
        rm -f "$out/run.json"
    done
done
