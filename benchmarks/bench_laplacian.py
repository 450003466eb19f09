"""Time and peak memory of one training step of a strong-form loss:
Laplacian + squared residual + backward to the parameters, by three exact methods:

* forward   : mscalednn's forward Laplacian, as the training loop runs it (points in chunks of
              ``mscalednn.train.auto_chunk`` with a backward per chunk; one chunk at N = 2000
              unless d * width is large),
* nested    : nested reverse-mode autograd, one torch.autograd.grad per input dimension on the
              gradient, all points at once (what DeepXDE does),
* torch.func: vmap over points of the trace of jacfwd(jacrev(u)),

and, with ``--methods ...``, ``forward+compile`` (the same under torch.compile, as
``train.compile: true`` runs it; compilation happens in the warm-up step and is not timed)
``hutchinson``, the Hutchinson estimate (16 Rademacher probes; not exact), and ``sampled``,
the sampled-coordinates estimate (16 of the d axes, gathered; not exact).
Every worker process calls ``mscalednn.runtime.tune_allocator()`` (as ``mscale`` does), whatever
the method. Each (method, model, d) runs in a fresh process (median of repeats after a warm-up);
the table prints times, the ratio to nested autograd measured in the same run, peak memory, the
step's matrix-product flops (``torch.utils.flop_counter``; elementwise work not counted), the
float32 sgemm rate measured in the same process ([20000, 128] x [128, 128]) and the step's share
of it (matmul flops / step time / sgemm rate); JSON is written. ``--check`` (meant for a GPU) compares each method's Laplacian on the device
with the float64 CPU reference first.

    python benchmarks/bench_laplacian.py                  # d in 2, 10, 50, 100
    python benchmarks/bench_laplacian.py --quick --json out.json
    python benchmarks/bench_laplacian.py --device cuda --check
    python benchmarks/bench_laplacian.py --methods forward hutchinson sampled --dims 100 1000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import sgemm_rate  # noqa: E402 (the same sgemm measurement in both benchmarks)
METHODS = ("forward", "nested", "torch.func")
MODELS = {"vanilla": "tanh", "mscale": "s2relu"}


def build(model: str, d: int, width: int, depth: int):
    from mscalednn.nn import MLP, MscaleDNN
    if model == "vanilla":
        return MLP(d, width=width, depth=depth, activation="tanh")
    return MscaleDNN(d, scales="geometric:6", width=width, depth=depth, activation="s2relu",
                     variant="first_layer")


def laplacian_fn(method: str, net):
    """x -> Laplace u(x) [N] by ``method``."""
    import torch
    from mscalednn.derivatives import laplacian_operator, value_grad_laplacian
    from mscalednn.forward_laplacian import forward_laplacian
    if method in ("forward", "forward+compile"):
        return lambda x: forward_laplacian(net, x, need_grad=False)[2]
    if method == "nested":
        return lambda x: value_grad_laplacian(net, x)[2]
    if method in ("hutchinson", "sampled"):
        op = laplacian_operator(method, net, probes=16)
        return lambda x: op(x)[2]
    from torch.func import functional_call, jacfwd, jacrev, vmap
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())

    def u(p, xi):
        return functional_call(net, (p, buffers), (xi.unsqueeze(0),)).squeeze()

    def lap(p, xi):
        return torch.trace(jacfwd(jacrev(u, argnums=1), argnums=1)(p, xi))

    return lambda x: vmap(lap, in_dims=(None, 0))(params, x)


def check(model: str, d: int, width: int, depth: int, device: str, methods) -> list[dict]:
    """Each method's Laplacian on ``device`` (float32) against nested autograd in float64 on the CPU."""
    import torch
    from mscalednn.derivatives import value_grad_laplacian
    torch.manual_seed(0)
    net = build(model, d, width, depth)
    x = torch.rand(256, d)
    ref = value_grad_laplacian(net.double(), x.double())[2].detach()
    net = net.float().to(device)
    out = []
    for method in methods:
        lap = laplacian_fn(method, net)(x.to(device)).detach().double().cpu()
        err = ((lap - ref).norm() / ref.norm()).item()
        out.append({"method": method, "model": model, "d": d, "device": device, "rel_err_vs_cpu_float64": err})
    return out


def worker(method: str, model: str, d: int, n: int, width: int, depth: int, reps: int, device: str) -> dict:
    import torch
    from mscalednn.runtime import tune_allocator
    from mscalednn.train import auto_chunk, backward_in_chunks, compile_loss
    tuned = tune_allocator()  # every method alike
    torch.manual_seed(0)
    dev = torch.device(device)
    net = build(model, d, width, depth).to(dev)
    x = torch.rand(n, d, device=dev)
    f = torch.randn(n, device=dev)
    lap = laplacian_fn(method, net)
    chunk = n if method in ("nested", "torch.func") else auto_chunk(net, d)  # nested: the peers' way

    def loss(xs, fs):
        return (-lap(xs) - fs).square().mean()

    if method == "forward+compile":  # as train.compile: true does; compiled in the warm-up step
        loss = compile_loss(loss)

    def step():
        net.zero_grad(set_to_none=True)
        return backward_in_chunks(loss, x, f, chunk)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, before any step
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    from torch.utils.flop_counter import FlopCounterMode
    plain = lambda xs, fs: (-lap(xs) - fs).square().mean()  # noqa: E731 (uncompiled: the same products)
    try:
        with FlopCounterMode(display=False) as counter:
            net.zero_grad(set_to_none=True)
            backward_in_chunks(plain, x, f, chunk)
        flops = float(counter.get_total_flops())
    except RuntimeError:  # the counter cannot follow torch.autograd.grad inside a backward (nested)
        flops = None
    sgemm = sgemm_rate(device)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
    return {"method": method, "model": model, "activation": MODELS[model], "d": d, "n": n,
            "width": width, "depth": depth, "device": device, "reps": reps,
            "chunk": chunk, "allocator_tuned": tuned,
            "time_s": times[len(times) // 2], "time_min_s": times[0],
            "matmul_gflop": None if flops is None else flops / 1e9, "sgemm_gflop_per_s": sgemm,
            "sgemm_share": None if flops is None else flops / times[len(times) // 2] / 1e9 / sgemm,
            "peak_mem_mb": peak, "baseline_rss_mb": base / 1024,
            "peak_mem_note": "GPU max allocated" if dev.type == "cuda" else "rise of the process peak RSS over the step"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="d in {10, 100}, one timed step after a warm-up, no torch.func (< 1 minute)")
    ap.add_argument("--json", default="benchmarks/out/laplacian.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--worker", nargs=3, metavar=("METHOD", "MODEL", "D"), help=argparse.SUPPRESS)
    ap.add_argument("--dims", nargs="+", type=int, default=None, help="input dimensions (default 2 10 50 100)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--check", action="store_true", help="first compare each method's Laplacian on --device "
                    "with the float64 CPU reference")
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 7)
    if args.worker:
        method, model, d = args.worker
        print(json.dumps(worker(method, model, int(d), args.n, args.width, args.depth, reps, args.device)))
        return
    dims = args.dims or ((10, 100) if args.quick else (2, 10, 50, 100))
    methods = [m for m in args.methods if not (args.quick and m == "torch.func")]
    records = []
    if args.check:
        for model in MODELS:
            for d in dims:
                for rec in check(model, d, args.width, args.depth, args.device, methods):
                    print(f"check {model:8s} d={d:4d} {rec['method']:11s} rel. difference from CPU float64: "
                          f"{rec['rel_err_vs_cpu_float64']:.2e}", flush=True)
                    records.append(rec)
    print(f"{'model':8s} {'act':7s} {'d':>4s} {'method':11s} {'time ms':>9s} {'vs nested':>9s} {'peak MB':>8s} "
          f"{'GFLOP':>7s} {'sgemm GF/s':>10s} {'share':>6s}", flush=True)
    for model in MODELS:
        for d in dims:
            row = {}
            for method in methods:
                cmd = [sys.executable, __file__, "--worker", method, model, str(d), "--n", str(args.n),
                       "--width", str(args.width), "--depth", str(args.depth), "--reps", str(reps),
                       "--device", args.device]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{model:8s} {MODELS[model]:7s} {d:4d} {method:11s} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                rec = json.loads(proc.stdout.strip().splitlines()[-1])
                records.append(rec)
                row[method] = rec
            for method, rec in row.items():
                ratio = row["nested"]["time_s"] / rec["time_s"] if "nested" in row else float("nan")
                rec["speedup_vs_nested"] = ratio
                print(f"{model:8s} {MODELS[model]:7s} {d:4d} {method:11s} {rec['time_s'] * 1e3:9.1f} "
                      f"{ratio:8.2f}x {rec['peak_mem_mb']:8.0f} "
                      + (f"{rec['matmul_gflop']:7.2f} " if rec["matmul_gflop"] is not None else f"{'-':>7s} ")
                      + f"{rec['sgemm_gflop_per_s']:10.0f} "
                      + (f"{rec['sgemm_share']:6.0%}" if rec["sgemm_share"] is not None else f"{'-':>6s}"), flush=True)
    from mscalednn.outputs import write_json
    path = ROOT / args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, records)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
