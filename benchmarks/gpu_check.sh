#!/usr/bin/env bash
# The GPU check of issue 16 (part 4), as one script for a machine with NVIDIA GPUs and a CUDA
# build of PyTorch: correctness first, then timings; every table also goes to $OUT (default
# gpu-check/). About 5-8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, in the environment with mscalednn
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    | tee -a "$OUT/gpu.txt"

# 1. correctness on the device: every Laplacian method against the float64 CPU reference
$PY benchmarks/bench_laplacian.py --device cuda --check --quick --methods forward nested hutchinson sampled \
    --json "$OUT/laplacian.json" | tee "$OUT/laplacian.txt"

# 2. the training step: points per second, its matmul flops against the GPU's float32 sgemm rate,
#    and what the per-step NaN/Inf check (the step's one host synchronisation) costs
$PY benchmarks/bench_throughput.py --device cuda --processes 1 --scalings weak --problems poisson10d poisson1000d \
    --steps 30 --json "$OUT/throughput.json" | tee "$OUT/throughput.txt"
$PY benchmarks/bench_throughput.py --device cuda --processes 1 --scalings weak --problems poisson10d \
    --points 20000 --steps 30 --json "$OUT/throughput_20k.json" | tee "$OUT/throughput_20k.txt"

# 3. a 60 s solve on the device (points drawn there, TF32 off), and the same with TF32
$PY -m mscalednn solve problems/poisson10d.yaml --set train.time_limit=60 --set train.progress=false \
    --out "$OUT/solve10d" 2>&1 | tail -2 | tee "$OUT/solve10d.txt"
$PY -m mscalednn solve problems/poisson10d.yaml --set train.time_limit=60 --set train.progress=false \
    --set train.tf32=true --out "$OUT/solve10d_tf32" 2>&1 | tail -2 | tee "$OUT/solve10d_tf32.txt"

# 4. several GPUs: torchrun with nccl, weak and strong scaling
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -ge 2 ]; then
    $PY benchmarks/bench_throughput.py --device cuda --processes 1 "$GPUS" --problems poisson10d poisson1000d \
        --steps 30 --json "$OUT/throughput_multi.json" | tee "$OUT/throughput_multi.txt"
fi
echo "gpu_check: done; tables in $OUT/"
