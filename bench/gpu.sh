#!/usr/bin/env bash
# The GPU check of issue #16, in one script (under 6 minutes on one modern GPU):
#   1. install what it needs (Triton, PyG) when a package index is reachable, else use what is installed;
#   2. run the Triton backend's tests and the torch.compile tests on the GPU (the same files `make test`
#      runs in Triton's CPU interpreter);
#   3. print the attention table: ours (Triton) vs PyG's edge softmax vs FlexAttention vs dense SDPA,
#      forward and forward + backward, time and peak memory (ER N=262,144 degree 16 and a window, H=4, D=32);
#   4. GPS training step, graphs/s: sparsegt's GPSLayer vs PyG's GPSConv, same model and weights.
# Usage: bash bench/gpu.sh            (PY=path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine')"
timeout 120 "$PY" -m pip install --quiet -e '.[triton,pyg,dev]' \
  || echo "note: pip install failed (no package index?); using the installed packages"
echo "== tests on $("$PY" -c 'import torch; print(torch.cuda.get_device_name())')"
timeout 240 "$PY" -m pytest tests/test_attention_triton.py tests/test_attention_compile.py -q -x -p no:cacheprovider
echo "== attention"
timeout 150 "$PY" bench/gpu_attention.py
echo "== GPS training step"
timeout 60 "$PY" examples/pyg_gpsconv.py --device cuda --graphs 512 --repeats 10
