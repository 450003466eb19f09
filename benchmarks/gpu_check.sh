#!/usr/bin/env bash
# The GPU check of issue 16 (part 4), as one script for a machine with NVIDIA GPUs and a CUDA
# build of PyTorch: correctness first, then timings; every table also goes to $OUT (default
# gpu-check/). About 5 minutes on one GPU. Each step runs on if an earlier one fails (its
# error is printed and the step is listed as FAILED at the end).
#
#   bash benchmarks/gpu_check.sh            # from the repository root (mscalednn installed or not)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# a checkout need not be installed: the benchmarks and their worker processes import it from here
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAILED=()
step() {  # step NAME COMMAND...: run (at most $STEP_LIMIT s), tee to $OUT/NAME.txt, remember a failure
    local name=$1; shift
    echo "=== $name: $*"
    timeout "${STEP_LIMIT:-600}" "$@" 2>&1 | tee "$OUT/$name.txt" || FAILED+=("$name")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 0. the device's float32 matrix rates: the product shape the benchmarks compare with, and a
#    large square product (the GPU's float32 peak in practice), with TF32 off and on
step rates $PY - <<'EOF'
import time, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
def rate(m, k, n, tf32, reps=20):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = torch.randn(m, k, device="cuda"), torch.randn(k, n, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9
for shape in ((20000, 128, 128), (200000, 128, 128), (8192, 8192, 8192)):
    print(f"sgemm {shape}: float32 {rate(*shape, False):9.0f} GFLOP/s   TF32 {rate(*shape, True):9.0f} GFLOP/s")
EOF

# 1. correctness on the device: every Laplacian method against the float64 CPU reference, and
#    one step's time (median of 10) at N = 2,000 points
step laplacian $PY benchmarks/bench_laplacian.py --device cuda --check --quick --reps 10 \
    --methods forward nested hutchinson sampled --json "$OUT/laplacian.json"

# 2. the training step: points per second, its matmul flops against the GPU's float32 sgemm rate,
#    and what the per-step NaN/Inf check (the step's one host synchronisation) costs
step throughput $PY benchmarks/bench_throughput.py --device cuda --processes 1 --scalings weak \
    --problems poisson10d poisson1000d --steps 30 --json "$OUT/throughput.json"
step throughput_20k $PY benchmarks/bench_throughput.py --device cuda --processes 1 --scalings weak \
    --problems poisson10d --points 20000 --steps 30 --json "$OUT/throughput_20k.json"
step throughput_200k $PY benchmarks/bench_throughput.py --device cuda --processes 1 --scalings weak \
    --problems poisson10d --points 200000 --steps 20 --json "$OUT/throughput_200k.json"

# 3. 20 s solves on the device (points drawn there, TF32 off), and the same with TF32
step solve10d $PY -m mscalednn solve problems/poisson10d.yaml --set train.time_limit=20 \
    --set train.progress=false --out "$OUT/solve10d"
step solve10d_tf32 $PY -m mscalednn solve problems/poisson10d.yaml --set train.time_limit=20 \
    --set train.progress=false --set train.tf32=true --out "$OUT/solve10d_tf32"

# 4. torch.compile on the GPU (train.compile): one step at d = 10, eager against compiled
step compile $PY benchmarks/bench_laplacian.py --device cuda --dims 10 --reps 20 --n 20000 \
    --methods forward forward+compile --json "$OUT/compile.json"

# 5. several GPUs: torchrun with nccl, weak and strong scaling
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -ge 2 ]; then
    step throughput_multi $PY benchmarks/bench_throughput.py --device cuda --processes 1 "$GPUS" \
        --problems poisson10d poisson1000d --steps 30 --json "$OUT/throughput_multi.json"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "gpu_check: FAILED: ${FAILED[*]}; tables in $OUT/"
    exit 1
fi
echo "gpu_check: done; tables in $OUT/"
