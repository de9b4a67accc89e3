#!/bin/bash
# One device call (1xH200) for the GPU-side checks of a session, run from the repository root with carry [".whl"]
# (.whl/colmap holds the pycolmap wheel for the device's Python, see docs/refine.md):
#   bash benchmarks/gpu_checks.sh 2>&1 | tee $OUT/gpu_checks.log
# 1. the gpu-marked tests; 2. the refinement of 200 views of 512x384 (issue 17's <= 60 s); 3. a one-GPU dry run
# of the multi-GPU benchmark (issue 19). Records come back under $OUT.
set -u
: "${OUT:?OUT must be set}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/colmap/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "\$ python3 -m pytest -q -m gpu -rA -p no:cacheprovider tests/model/test_output_device.py   # commit $(git rev-parse --short HEAD 2>/dev/null || echo "${FAST3R_COMMIT:-?}")"
python3 -m pytest -q -m gpu -rA -p no:cacheprovider tests/model/test_output_device.py 2>&1 | tail -15
echo "\$ bench_refine --views 200 --width 512 --height 384 --device cuda"
PYTHONPATH=/tmp/site:$PWD timeout 300 python3 benchmarks/bench_refine.py --views 200 --width 512 --height 384 \
  --device cuda 2>&1 | tail -15
cp benchmarks/results/refine_*.jsonl "$OUT/" 2>/dev/null
echo "\$ torchrun --nproc-per-node 1 benchmarks/bench_multigpu.py --views 256 --one-gpu-only"
PYTHONPATH=$PWD timeout 200 torchrun --nproc-per-node 1 benchmarks/bench_multigpu.py --views 256 --one-gpu-only \
  --out "$OUT/multigpu_dryrun.jsonl" 2>&1 | tail -8
