# Environment for building and running against the venv's libtorch. Source it:
#   . scripts/env.sh
# Build: tch finds libtorch through the venv's python (LIBTORCH_USE_PYTORCH=1).
# Run: the libtorch shared libraries must be on LD_LIBRARY_PATH.
_tcomm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export TCOMM_ROOT="$_tcomm_root"
export PATH="$_tcomm_root/.venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
_torch_lib="$(ls -d "$_tcomm_root"/.venv/lib/python3.*/site-packages/torch/lib 2>/dev/null | head -n 1)"
if [ -n "$_torch_lib" ]; then
    export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
unset _tcomm_root _torch_lib
