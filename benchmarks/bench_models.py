"""Whole-network speed and memory of minifit against PyTorch CPU, side by side.

For each network (mnist-fitnet, mnist-teacher, fitnet-1, fitnet-4, cifar-teacher,
wrn-10-2): one training step (forward, cross-entropy, backward, SGD update with momentum
and the networks' max-norm constraints, batch 128, float32, train mode: dropout and batch
statistics) and one inference pass (forward, eval mode, no graph), minifit and PyTorch
2.13 CPU on identical random inputs and identical initial weights, plus each side's peak
resident memory.

How: this process builds the minifit network (minifit.models.build), exports its layer
list as JSON and its weights and the inputs to an .npz. Per network, two persistent worker
processes serve timing requests: one minifit worker (this file, --worker minifit) and one
PyTorch worker (this file, --worker torch, run by the torch venv's interpreter; it never
imports minifit: it builds a twin of the network from the JSON with the same layer
semantics: maxout = view + max over the pieces, ceil-mode max pool, one bias per map,
pre-activation WRN blocks with BN). The two sides' steps alternate (blocks of minifit,
torch, minifit, ...; see "Schedule" below), so on a shared machine both see the same load (--gap
adds an idle pause before each call). Each network runs in its
own pair of processes, so ru_maxrss is that network's peak resident memory (reported also
above the worker's resident size after its imports and the inputs, "delta").

Schedule: after warm-up, the sides take turns in blocks (--block, default 3): one untimed
call, then the timed ones, then the other side's block, until each side has its repeats.
Why not call by call: after each call PyTorch's idle OpenMP threads keep spinning for
several ms (libgomp's default), on the two cores the next minifit call needs. Measured on
mnist-fitnet inference (2026-11-22, this script's two workers after 5 training steps each):
minifit 9.4 ms in a block, 16.7 ms when called right after each PyTorch call; PyTorch
11.5 / 12.4 ms. With PyTorch's threads
made passive (OMP_WAIT_POLICY=PASSIVE) minifit's interleaved time fell to 10.2 ms, so the
difference was PyTorch's spinning, not load. Blocks still spread slow load changes over
both sides; the first call of a block (which may still meet the other side's spinning
threads) is discarded. --block 0 restores the call-by-call schedule (every call timed).

Before timing, the eval-mode logits of the two sides are compared (max relative error):
the twin computes the same function.

Threads: minifit MINIFIT_NUM_THREADS=2; torch.set_num_threads(2).

  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /tmp/venv/bin/python benchmarks/bench_models.py
      [--models a,b] [--layers] [--epochs] [--no-write]

--layers also runs benchmarks/bench_layers.py (per-layer table) and --epochs the wall time
of one epoch of each MNIST FitNets stage on real MNIST (teacher, backprop student, KD
student, hint stage 1, stage 2: experiments/mnist-fitnets.toml with every stage set to one
epoch, through minifit.distill.Runner) and of the CIFAR-10 FitNet-1 student
(cifar_epoch_time); needs the data: MINIFIT_DATA or --data.

Speed against the hardware: each network's training step and inference pass are also
given in GFLOP/s (step_flops: the direct algorithm's FLOPs) and as a share of the
machine's attainable peak, a large float32 GEMM on the same threads measured in the same
run (sgemm_gflops). Results go
to BENCHMARKS.md (each section is replaced only when this run measured it).
(OPENBLAS_CORETYPE=Haswell, if set, keeps numpy's OpenBLAS on AVX2 kernels: about 2x
slower GEMMs on an AVX-512 machine.)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 128
THREADS = 2
BLOCK = 3   # timed calls per side in a row (after one untimed call): see "Schedule" in the docstring
LR, MOMENTUM = 0.01, 0.9
# (name, warm-up, train repeats, inference repeats)
MODELS = [
    ("mnist-fitnet", 3, 15, 25),
    ("mnist-teacher", 3, 11, 21),
    ("fitnet-1", 3, 11, 21),
    ("fitnet-4", 2, 5, 7),
    ("cifar-teacher", 2, 5, 7),
    ("wrn-10-2", 2, 9, 15),
]
# issue 15's targets (ratio minifit / PyTorch, lower is better): every network <= 0.75 in
# training and in inference, and the geometric mean over the six <= 0.6 in each
TARGET, TARGET_GEOMEAN = 0.75, 0.6
# the attainable peak: a large float32 GEMM through numpy (OpenBLAS) on the same threads,
# best of PEAK_REPEATS, in each network's minifit worker after its timings
PEAK_N, PEAK_REPEATS = 2048, 5


def geomean(v):
    return float(np.exp(np.mean(np.log(v))))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ============================================================================ export
def describe(net):
    """minifit network -> JSON-able layer list (the torch twin's recipe)."""
    from minifit import nn
    from minifit.models.wrn import WideBlock

    def conv(m):
        return {"in": m.in_channels, "out": m.out_channels, "k": list(m.kernel_size),
                "stride": m.stride, "pad": m.padding, "bias": "bias" in m._params,
                "max_norm": m.weight.max_norm}

    layers = []
    for name, m in net._children.items():
        if isinstance(m, nn.MaxoutConv2d):
            d = {"type": "maxout_conv", **conv(m), "pieces": m.pieces, "pool": m.pool,
                 "pool_stride": m.pool_stride, "ceil": m.ceil_mode}
        elif isinstance(m, nn.MaxoutLinear):
            d = {"type": "maxout_linear", "in": m.in_features, "out": m.out_features,
                 "pieces": m.pieces, "max_norm": m.weight.max_norm}
        elif isinstance(m, nn.Linear):
            d = {"type": "linear", "in": m.in_features, "out": m.out_features,
                 "bias": "bias" in m._params, "max_norm": m.weight.max_norm}
        elif isinstance(m, nn.Conv2d):
            d = {"type": "conv", **conv(m)}
        elif isinstance(m, WideBlock):
            d = {"type": "wide_block", "in": m.in_channels, "out": m.out_channels,
                 "stride": m.stride, "dropout": m.p, "projects": m.projects}
        elif isinstance(m, nn._BatchNorm):
            d = {"type": "bn", "c": m.num_features, "momentum": m.momentum, "eps": m.eps}
        elif isinstance(m, nn.Dropout):
            d = {"type": "dropout", "p": m.p}
        elif isinstance(m, nn.ReLU):
            d = {"type": "relu"}
        elif isinstance(m, nn.GlobalAvgPool2d):
            d = {"type": "gap"}
        elif isinstance(m, nn.Flatten):
            d = {"type": "flatten"}
        else:
            raise TypeError(f"bench_models: no torch twin for layer {name} ({type(m).__name__})")
        layers.append({"name": name, **d})
    return {"input_shape": list(net.input_shape), "num_classes": net.num_classes, "layers": layers}


def conv_out(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def pool_out(z, k, s, ceil):
    """Max-pool output size (PyTorch's rule: ceil mode drops a window that starts in the padding)."""
    if ceil:
        o = -(-(z - k) // s) + 1
        return o - 1 if (o - 1) * s >= z else o
    return (z - k) // s + 1


def step_flops(desc, batch=BATCH):
    """(training-step FLOPs, inference FLOPs) of a network described by describe(): the
    multiply-adds of its convolutions and linear layers, 2 FLOPs each, counted as the
    direct algorithm does them (a Winograd or FFT path does fewer multiplications for the
    same count: this is "effective" FLOPs, the usual convention). Forward F = 2 N O C kh kw
    OH OW per conv (O = all conv maps, the maxout pieces included), 2 N in out per linear
    layer; the training step adds the weight gradient (F again) and the input gradient (F
    again) of every layer but the first, whose input needs no gradient. Elementwise work
    (maxout, pooling, BN, the update) is not counted."""
    c, h, w = desc["input_shape"]
    fwd, first = 0, None

    def add(f):
        nonlocal fwd, first
        fwd += f
        if first is None:
            first = f
    for d in desc["layers"]:
        t = d["type"]
        if t in ("maxout_conv", "conv"):
            (kh, kw), s, p = d["k"], d["stride"], d["pad"]
            s = s if isinstance(s, (list, tuple)) else (s, s)
            p = p if isinstance(p, (list, tuple)) else (p, p)
            oh, ow = conv_out(h, kh, s[0], p[0]), conv_out(w, kw, s[1], p[1])
            add(2 * batch * d["out"] * c * kh * kw * oh * ow)
            c, h, w = d["out"], oh, ow
            if t == "maxout_conv":
                c //= d["pieces"]
                pool = d["pool"]
                pk = pool if isinstance(pool, (list, tuple)) else (pool, pool)
                if pool is not None and tuple(pk) != (1, 1):
                    ps = d["pool_stride"] if d["pool_stride"] is not None else pk
                    ps = ps if isinstance(ps, (list, tuple)) else (ps, ps)
                    h, w = pool_out(h, pk[0], ps[0], d["ceil"]), pool_out(w, pk[1], ps[1], d["ceil"])
        elif t == "wide_block":
            s, cout = d["stride"], d["out"]
            oh, ow = conv_out(h, 3, s, 1), conv_out(w, 3, s, 1)
            add(2 * batch * cout * c * 9 * oh * ow)          # conv1
            fwd += 2 * batch * cout * cout * 9 * oh * ow     # conv2
            if d["projects"]:
                fwd += 2 * batch * cout * c * oh * ow         # 1x1 shortcut
            c, h, w = cout, oh, ow
        elif t in ("linear", "maxout_linear"):
            add(2 * batch * d["in"] * d["out"])
            c, h, w = d["out"] // d.get("pieces", 1), 1, 1
        elif t == "gap":
            h = w = 1
        elif t == "flatten":
            c, h, w = c * h * w, 1, 1
    return 3 * fwd - first, fwd


def export(name, folder, seed=0):
    from minifit import random as mrandom
    from minifit.models import build
    mrandom.manual_seed(seed)
    net = build(name)
    desc = describe(net)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH,) + tuple(net.input_shape), dtype=np.float32)
    y = rng.integers(0, net.num_classes, BATCH).astype(np.int64)
    state = {f"p:{k}": np.asarray(v) for k, v in net.state_dict().items()}
    path = os.path.join(folder, f"{name}.npz")
    np.savez(path, x=x, y=y, **state)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(desc, f)
    return path, os.path.join(folder, f"{name}.json")


# ============================================================================ minifit worker
def kernel_threads(cpu):
    """The CPU kernels' thread count (kernels.cpu.runtime.NT; kernels.cpu._NT in trees before
    the kernels/cpu/ package, so the script also measures older commits)."""
    runtime = getattr(cpu, "runtime", None)
    return runtime.NT if runtime is not None else cpu._NT


def minifit_worker(name, npz):
    from minifit import functional as F
    from minifit import optim
    from minifit import random as mrandom
    from minifit.models import build
    from minifit.tensor import Tensor, no_grad
    import kernels.cpu  # noqa: F401  (load the compiled kernels before the baseline)

    data = np.load(npz)
    x, y = data["x"], data["y"]
    base = current_rss_mb()
    mrandom.manual_seed(1)
    net = build(name)
    net.load_state_dict({k[2:]: data[k] for k in data.files if k.startswith("p:")})
    opt = optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)

    def train():
        net.train()
        opt.zero_grad()
        loss = F.cross_entropy(net(Tensor(x)), y)
        loss.backward()
        opt.step()
        return loss

    def infer():
        net.eval()
        with no_grad():
            return net(Tensor(x))

    return base, train, infer, lambda: infer().numpy()


# ============================================================================ torch worker
def torch_twin(desc):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF

    def conv(d):
        k = d["k"]
        return tnn.Conv2d(d["in"], d["out"], tuple(k), d["stride"], d["pad"], bias=d["bias"])

    class MaxoutConv(tnn.Module):
        def __init__(self, d):
            super().__init__()
            self.conv = conv(d)
            self.p, self.pool, self.ps, self.ceil = d["pieces"], d["pool"], d["pool_stride"], d["ceil"]

        def forward(self, x):
            z = self.conv(x)
            n, c, h, w = z.shape
            m = z.view(n, c // self.p, self.p, h, w).amax(dim=2) if self.p > 1 else z
            if self.pool in (1, [1, 1]):
                return m
            return TF.max_pool2d(m, self.pool, self.ps, ceil_mode=self.ceil)

    class MaxoutLinear(tnn.Module):
        def __init__(self, d):
            super().__init__()
            self.lin = tnn.Linear(d["in"], d["out"])
            self.p = d["pieces"]

        def forward(self, x):
            z = self.lin(torch.flatten(x, 1))
            return z.view(z.shape[0], -1, self.p).amax(dim=2)

    class WideBlock(tnn.Module):
        def __init__(self, d):
            super().__init__()
            cin, cout, s = d["in"], d["out"], d["stride"]
            self.bn1 = tnn.BatchNorm2d(cin)
            self.conv1 = tnn.Conv2d(cin, cout, 3, s, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.drop = tnn.Dropout(d["dropout"])
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.projects = d["projects"]
            if self.projects:
                self.shortcut = tnn.Conv2d(cin, cout, 1, s, 0, bias=False)

        def forward(self, x):
            a = TF.relu(self.bn1(x))
            h = self.conv2(self.drop(TF.relu(self.bn2(self.conv1(a)))))
            return h + (self.shortcut(a) if self.projects else x)

    class Net(tnn.Module):
        def __init__(self, desc):
            super().__init__()
            self.max_norms = []   # (parameter name, max norm)
            for d in desc["layers"]:
                t, nm = d["type"], d["name"]
                if t == "maxout_conv":
                    m = MaxoutConv(d)
                elif t == "maxout_linear":
                    m = MaxoutLinear(d)
                elif t == "linear":
                    m = tnn.Linear(d["in"], d["out"], bias=d["bias"])
                elif t == "conv":
                    m = conv(d)
                elif t == "wide_block":
                    m = WideBlock(d)
                elif t == "bn":
                    m = tnn.BatchNorm2d(d["c"], eps=d["eps"], momentum=d["momentum"])
                elif t == "dropout":
                    m = tnn.Dropout(d["p"])
                elif t == "relu":
                    m = tnn.ReLU()
                elif t == "gap":
                    m = tnn.AdaptiveAvgPool2d(1)
                elif t == "flatten":
                    m = tnn.Flatten()
                else:
                    raise TypeError(t)
                self.add_module(nm, m)
                if d.get("max_norm") is not None:
                    self.max_norms.append((nm, d["max_norm"]))
            self.gap_then_fc = any(d["type"] == "gap" for d in desc["layers"])

        def forward(self, x):
            for m in self.children():
                x = m(x)
                if isinstance(m, tnn.AdaptiveAvgPool2d):
                    x = torch.flatten(x, 1)
            return x

    net = Net(desc)
    # minifit names -> torch names (the maxout wrappers add a level)
    mapping = {}
    for d in desc["layers"]:
        nm = d["name"]
        if d["type"] == "maxout_conv":
            mapping.update({f"{nm}.weight": f"{nm}.conv.weight", f"{nm}.bias": f"{nm}.conv.bias"})
        elif d["type"] == "maxout_linear":
            mapping.update({f"{nm}.weight": f"{nm}.lin.weight", f"{nm}.bias": f"{nm}.lin.bias"})
    return net, mapping


def torch_worker(name, npz, jsn):
    import torch
    import torch.nn.functional as TF
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", THREADS)))
    with open(jsn) as f:
        desc = json.load(f)
    data = np.load(npz)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    base = current_rss_mb()
    torch.manual_seed(1)
    net, mapping = torch_twin(desc)
    own = net.state_dict()
    state = {}
    for k in data.files:
        if not k.startswith("p:"):
            continue
        tk = mapping.get(k[2:], k[2:])
        if tk not in own:
            raise KeyError(f"torch twin has no {tk}")
        state[tk] = torch.from_numpy(np.array(data[k]))
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"weights missing for the torch twin: {missing[:5]}")
    net.load_state_dict(state, strict=False)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    constrained = []
    params = dict(net.named_parameters())
    for nm, mx in net.max_norms:
        w = next(params[k] for k in (f"{nm}.weight", f"{nm}.conv.weight", f"{nm}.lin.weight") if k in params)
        constrained.append((w, mx))

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = TF.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():   # the networks' max-norm constraints, as minifit applies them
            for w, mx in constrained:
                norms = w.flatten(1).norm(dim=1).clamp_min(1e-12)
                w.mul_((mx / norms).clamp(max=1.0).view((-1,) + (1,) * (w.dim() - 1)))
        return loss

    def infer():
        net.eval()
        with torch.inference_mode():
            return net(x)

    return base, train, infer, lambda: infer().numpy()


def serve(side, name, npz, jsn):
    """Answer 'train' / 'infer' (seconds), 'logits <path>', 'mem', 'quit' on stdin."""
    tick = time.process_time if os.environ.get("BENCH_CLOCK") == "cpu" else time.perf_counter
    if side == "torch":
        import torch
        base, train, infer, logits = torch_worker(name, npz, jsn)
        info = {"version": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads()}
    else:
        base, train, infer, logits = minifit_worker(name, npz)
        import numba
        from kernels import cpu as K
        info = {"threads": kernel_threads(K), "numba": numba.__version__, "numpy": np.__version__}
    info["base_mb"] = base
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "logits":
            np.save(cmd[1], logits())
            print("ok", flush=True)
        elif cmd[0] == "mem":
            print(json.dumps({"peak_mb": rss_mb(), "base_mb": base}), flush=True)
        elif cmd[0] == "peak":
            print(sgemm_gflops(), flush=True)
        else:
            fn = train if cmd[0] == "train" else infer
            t0 = tick()
            fn()
            print(tick() - t0, flush=True)


def sgemm_gflops(n=PEAK_N, repeats=PEAK_REPEATS):
    """The machine's attainable float32 rate here: GFLOP/s of an n x n x n sgemm through
    numpy (OpenBLAS, its threads = the benchmark's: OMP_NUM_THREADS), best of ``repeats``."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)
    best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    return 2.0 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ============================================================================ driver
class Worker:
    def __init__(self, python, side, name, npz, jsn, env):
        self.p = subprocess.Popen([python, os.path.abspath(__file__), "--worker", side, name, npz, jsn],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the {side} worker for {name} failed to start")
        self.info = json.loads(line)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                self.p.wait(timeout=30)
            except Exception:
                self.p.kill()


def find_torch_python():
    env = os.environ.get("MINIFIT_TORCH_PYTHON")
    for c in ([env] if env else ["/tmp/torchvenv/bin/python", shutil.which("python3")]):
        if c and os.path.exists(c) and subprocess.run([c, "-c", "import torch"], capture_output=True).returncode == 0:
            return c
    return None


def bench_model(name, warmup, rep_train, rep_infer, tmp, tpy, log, threads=THREADS, clock="wall", gap=0.0,
                block=BLOCK):
    npz, jsn = export(name, tmp)
    with open(jsn) as f:
        flops = step_flops(json.load(f))
    env = dict(os.environ, MINIFIT_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), BENCH_THREADS=str(threads),
               BENCH_CLOCK=clock)
    ours = Worker(sys.executable, "minifit", name, npz, jsn, env)
    theirs = Worker(tpy, "torch", name, npz, jsn, env) if tpy else None
    try:
        res = {"name": name, "minifit_info": ours.info, "torch_info": theirs.info if theirs else None}
        # same function? eval-mode logits on the initial weights
        if theirs:
            a, b = os.path.join(tmp, "a.npy"), os.path.join(tmp, "b.npy")
            ours.ask(f"logits {a}")
            theirs.ask(f"logits {b}")
            la, lb = np.load(a).astype(np.float64), np.load(b).astype(np.float64)
            res["rel_err"] = float(np.abs(la - lb).max() / max(np.abs(lb).max(), 1e-30))
        for kind, reps in (("train", rep_train), ("infer", rep_infer)):
            to, tt = [], []
            for i in range(warmup):
                ours.ask(kind)
                if theirs:
                    theirs.ask(kind)
            while len(to) < reps:
                # a block of calls per side; its first call is not timed (see "Schedule" above)
                for side, times in ((ours, to), (theirs, tt)):
                    if side is None:
                        continue
                    first = 1 if block else 0
                    for j in range(first + max(block, 1)):
                        if gap:
                            time.sleep(gap)
                        t = float(side.ask(kind))
                        if j >= first:
                            times.append(t)
            res[kind] = (float(np.median(to)), float(np.median(tt)) if theirs else None)
            res[kind + "_spread"] = (float(np.min(to)), float(np.max(to)),
                                     float(np.min(tt)) if tt else None, float(np.max(tt)) if tt else None)
        res["mem"] = (json.loads(ours.ask("mem")), json.loads(theirs.ask("mem")) if theirs else None)
        res["flops"] = flops                       # (train step, inference)
        res["peak"] = float(ours.ask("peak"))      # GFLOP/s, after "mem": its buffers stay out of the peak RSS
    finally:
        ours.close()
        if theirs:
            theirs.close()
    log(fmt_row(res))
    return res


def fmt_row(r):
    (mo, mt), (io, it) = r["train"], r["infer"]
    mem_o, mem_t = r["mem"]
    s = f"{r['name']:14s} train {mo * 1e3:8.1f} ms"
    if mt:
        s += f" / {mt * 1e3:8.1f} ms = {mo / mt:5.2f}"
    s += f"   infer {io * 1e3:7.1f} ms"
    if it:
        s += f" / {it * 1e3:7.1f} ms = {io / it:5.2f}"
    s += f"   peak RSS {mem_o['peak_mb']:6.0f} MB"
    if mem_t:
        s += f" / {mem_t['peak_mb']:6.0f} MB = {mem_o['peak_mb'] / mem_t['peak_mb']:4.2f}"
    if "rel_err" in r:
        s += f"   logits rel err {r['rel_err']:.1e}"
    (ft, fi), pk = r["flops"], r["peak"]
    s += (f"\n{'':14s} train {ft / 1e9:6.1f} GFLOP at {ft / mo / 1e9:5.1f} GFLOP/s ({ft / mo / 1e9 / pk:4.0%} of "
          f"peak)   infer {fi / 1e9:6.1f} GFLOP at {fi / io / 1e9:5.1f} GFLOP/s ({fi / io / 1e9 / pk:4.0%})"
          f"   peak (sgemm {PEAK_N}) {pk:5.1f} GFLOP/s")
    if mt:
        s += f"   torch: {ft / mt / 1e9:5.1f} / {fi / it / 1e9:5.1f} GFLOP/s"
    return s


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        blas = f"{b.get('name')} {b.get('version')}"
    except Exception:
        pass
    try:
        import threadpoolctl
        infos = threadpoolctl.threadpool_info()
        blas += "; " + ", ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                                 for i in infos if i.get("user_api") == "blas")
    except Exception:
        pass
    import numba
    return {"cpu": cpu, "cores": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version(), "blas": blas,
            "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}


def loadavg():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def epoch_times(data_dir, log):
    """Wall seconds of one epoch of each MNIST FitNets stage (incl. its validation pass)."""
    from minifit.distill.experiment import Runner, load_config
    cfg = load_config(os.path.join(ROOT, "experiments", "mnist-fitnets.toml"))
    cfg["teacher"]["epochs"] = 1
    for s in cfg.get("student", []):
        s["epochs"] = 1
        for st in ("stage1", "stage2"):
            if st in s:
                s[st]["epochs"] = 1
    out = tempfile.mkdtemp(prefix="bench_epochs_")
    os.environ["MINIFIT_NUM_THREADS"] = str(THREADS)
    try:
        t0 = time.perf_counter()
        summary = Runner(cfg, out, 1.0, False, data_dir, log=lambda *a: None, progress=False).run()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rows = []
    for r in summary["results"]:
        secs = r["seconds"]
        if r["method"] == "fitnets":
            rows += [(f"{r['label']} stage 1 (hints)", secs[0]), (f"{r['label']} stage 2 (KD)", secs[1])]
        else:
            rows.append((f"{r['label']} ({r['method']}, {r['model']})", secs[0]))
    for label, s in rows:
        log(f"  {label:36s} {s:7.1f} s")
    log(f"  whole run (data, teacher outputs, test passes included): {wall:.1f} s")
    return rows, wall, summary["data"]


def cifar_epoch_time(data_dir, log):
    """Wall seconds of one epoch of the CIFAR-10 FitNet-1 student by backprop
    (experiments/cifar10-fitnet1.toml's "backprop" row: GCN + ZCA, translations and flips,
    RMSProp, batch 128, 40,000 training images), including its validation pass. The
    teacher is not trained (12 min per epoch here): a freshly initialised cifar-teacher is
    written to a file and loaded, which the Runner only evaluates."""
    from minifit import random as mrandom
    from minifit import weights
    from minifit.distill.experiment import Runner, load_config
    from minifit.models import build
    cfg = load_config(os.path.join(ROOT, "experiments", "cifar10-fitnet1.toml"))
    out = tempfile.mkdtemp(prefix="bench_epochs_")
    os.environ["MINIFIT_NUM_THREADS"] = str(THREADS)
    try:
        mrandom.manual_seed(0)
        tpath = os.path.join(out, "teacher.npz")
        weights.write(tpath, {k: np.asarray(v) for k, v in build(cfg["teacher"]["model"]).state_dict().items()})
        cfg["teacher"] = {"model": cfg["teacher"]["model"], "weights": tpath}
        cfg["student"] = [dict(s, epochs=1) for s in cfg["student"] if s["method"] == "backprop"]
        summary = Runner(cfg, os.path.join(out, "run"), 1.0, False, data_dir, log=lambda *a: None,
                         progress=False).run()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    r = summary["results"][-1]
    label = f"CIFAR-10 {r['label']} ({r['method']}, {r['model']})"
    log(f"  {label:36s} {r['seconds'][0]:7.1f} s")
    return label, r["seconds"][0], summary["data"]


def replace_section(text, key, body):
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        i, j = text.index(start), text.index(end) + len(end)
        return text[:i] + block + text[j:]
    return text.rstrip() + "\n\n" + block + "\n"


def models_markdown(results, info, tinfo, load0, load1, date, argv, threads):
    lines = [f"Measured {date} by `{argv}`.", "",
             f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, numpy {info['numpy']}, "
             f"numba {info['numba']}, BLAS {info['blas']}"
             + (f", torch {tinfo['version']} (CPU capability {tinfo['capability']})" if tinfo else "")
             + f"; {threads} thread(s) on each side; OPENBLAS env: {info['openblas_env'] or 'unset'}.",
             f"Load average (1, 5, 15 min) before: {load0}; after: {load1}.", "",
             "Batch 128, float32. Train step = forward, cross-entropy, backward, SGD (momentum) update with "
             "the max-norm constraints; inference = forward in eval mode without a graph. Median over "
             "repeats after warm-up, the two sides taking turns in blocks (an untimed call, then "
             "the timed ones: see the script's docstring, \"Schedule\"); ratio = minifit / PyTorch "
             "(lower is better). "
             "Peak RSS = ru_maxrss of the worker process that ran only that network (delta: above the "
             "worker's resident size after its imports and inputs).", "",
             "GFLOP = the step's multiply-adds x 2 as the direct algorithm counts them (step_flops: convs and "
             "linear layers; the training step adds both gradients of every layer but the first); GFLOP/s = "
             "GFLOP / median time; share = minifit's GFLOP/s / the peak, a "
             f"{PEAK_N}x{PEAK_N} float32 GEMM through numpy on the same threads, best of {PEAK_REPEATS}, "
             "measured in each network's minifit worker after its timings.", "",
             "| network | minifit train ms | torch train ms | train ratio | minifit infer ms | "
             "torch infer ms | infer ratio | minifit peak MB (delta) | torch peak MB (delta) | memory ratio | "
             "logits rel err |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    flops = ["", "| network | train GFLOP | minifit train GFLOP/s (share of peak) | torch train GFLOP/s | "
                 "infer GFLOP | minifit infer GFLOP/s (share) | torch infer GFLOP/s | peak GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = {"train": [], "infer": []}
    for r in results:
        (mo, mt), (io, it) = r["train"], r["infer"]
        mem_o, mem_t = r["mem"]
        do = mem_o["peak_mb"] - mem_o["base_mb"]
        (ft, fi), pk = r["flops"], r["peak"]
        flops.append(f"| {r['name']} | {ft / 1e9:.1f} | {ft / mo / 1e9:.1f} ({ft / mo / 1e9 / pk:.0%}) | "
                     + (f"{ft / mt / 1e9:.1f}" if mt else "-")
                     + f" | {fi / 1e9:.1f} | {fi / io / 1e9:.1f} ({fi / io / 1e9 / pk:.0%}) | "
                     + (f"{fi / it / 1e9:.1f}" if it else "-") + f" | {pk:.0f} |")
        if mt:
            dt = mem_t["peak_mb"] - mem_t["base_mb"]
            ratios["train"].append(mo / mt)
            ratios["infer"].append(io / it)
            lines.append(
                f"| {r['name']} | {mo * 1e3:.1f} | {mt * 1e3:.1f} | {mo / mt:.2f} | "
                f"{io * 1e3:.1f} | {it * 1e3:.1f} | {io / it:.2f} | {mem_o['peak_mb']:.0f} ({do:.0f}) | "
                f"{mem_t['peak_mb']:.0f} ({dt:.0f}) | {mem_o['peak_mb'] / mem_t['peak_mb']:.2f} | "
                f"{r.get('rel_err', float('nan')):.1e} |")
        else:
            lines.append(f"| {r['name']} | {mo * 1e3:.1f} | - | - | {io * 1e3:.1f} | - | - | "
                         f"{mem_o['peak_mb']:.0f} ({do:.0f}) | - | - | - |")
    if ratios["train"]:
        lines.append("")
        for kind in ("train", "infer"):
            v = ratios[kind]
            lines.append(f"- {kind}: geometric mean ratio {geomean(v):.2f} over {len(v)} networks (target <= "
                         f"{TARGET_GEOMEAN}), max {max(v):.2f} (target: every network <= {TARGET}).")
    lines += flops
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="", help="comma-separated subset of " + ",".join(m[0] for m in MODELS))
    ap.add_argument("--repeat-scale", type=float, default=1.0, help="multiply the repeat counts")
    ap.add_argument("--layers", action="store_true", help="also run bench_layers.py (per-layer table)")
    ap.add_argument("--epochs", action="store_true", help="also time one epoch of each MNIST FitNets stage")
    ap.add_argument("--data", default=None, help="data folder for --epochs (default: MINIFIT_DATA)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--gap", type=float, default=0.0,
                    help="seconds of idle time before each timed call, so the other side's idle OpenMP "
                         "threads stop spinning first (default 0; on this VM an idle gap makes both "
                         "sides' next call slower: threads and caches go cold)")
    ap.add_argument("--block", type=int, default=BLOCK,
                    help="timed calls per side in a row, after one untimed call (0: call by call, all timed)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time (with --threads 1: far less sensitive to other jobs on a "
                         "shared machine than wall time)")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        serve(*a.worker)
        return 0
    os.environ.setdefault("MINIFIT_NUM_THREADS", str(THREADS))
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"warning: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set: numpy's OpenBLAS may run "
              "slower kernels than this CPU supports (run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`)",
              file=sys.stderr)
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    given = list(sys.argv[1:] if argv is None else argv)
    if "--out" in given:   # (where the table was written is not how it was measured)
        i = given.index("--out")
        del given[i:i + 2]
    given = [g for g in given if not g.startswith("--out=")]
    cmdline = "python benchmarks/bench_models.py" + "".join(" " + g for g in given)
    info = machine_info()
    load0 = loadavg()
    print(f"{date}; {info['cpu']}, {info['cores']} cores; numpy {info['numpy']}, numba {info['numba']}; "
          f"BLAS {info['blas']}; load {load0}")
    sections = {}
    log = lambda s="": print(s, flush=True)  # noqa: E731
    wanted = [m for m in MODELS if not a.models or m[0] in a.models.split(",")]
    if wanted:
        tpy = None if a.no_torch else find_torch_python()
        if tpy is None and not a.no_torch:
            print("PyTorch not found (MINIFIT_TORCH_PYTHON): minifit only", file=sys.stderr)
        tmp = tempfile.mkdtemp(prefix="bench_models_")
        results = []
        try:
            for name, w, rt, ri in wanted:
                results.append(bench_model(name, w, max(3, round(rt * a.repeat_scale)),
                                           max(3, round(ri * a.repeat_scale)), tmp, tpy, log,
                                           a.threads, a.clock, a.gap, a.block))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        load1 = loadavg()
        log(f"load average after: {load1}")
        tinfo = next((r["torch_info"] for r in results if r["torch_info"]), None)
        key = "models" if (a.threads, a.clock) == (THREADS, "wall") else f"models-{a.threads}t-{a.clock}"
        sections[key] = (f"## Whole networks: minifit vs PyTorch, {a.threads} thread(s), {a.clock} clock\n\n"
                         + models_markdown(results, info, tinfo, load0, load1, date, cmdline, a.threads))
    if a.layers:
        log("per-layer benchmark (bench_layers.py) ...")
        l0 = loadavg()
        r = subprocess.run([sys.executable, os.path.join(HERE, "bench_layers.py")], capture_output=True, text=True)
        log(r.stdout)
        if r.returncode:
            log(r.stderr)
        sections["layers"] = ("## Per layer: conv + maxout (+ pool), forward + backward\n\n"
                              f"Measured {date} by `python benchmarks/bench_layers.py` (load average before: {l0}; "
                              f"after: {loadavg()}).\n\n```\n{r.stdout.rstrip()}\n```")
    if a.epochs:
        data_dir = a.data or os.environ.get("MINIFIT_DATA")
        log("one epoch of each MNIST FitNets stage (real MNIST) ...")
        l0 = loadavg()
        rows, wall, meta = epoch_times(data_dir, log)
        body = ["## One epoch of each MNIST FitNets stage (minifit)", "",
                f"Measured {date} by `python benchmarks/bench_models.py --epochs` (experiments/mnist-fitnets.toml, "
                f"every stage set to 1 epoch; batch 128; {meta.get('train')} training images; {THREADS} threads; "
                f"wall time of the epoch including its validation pass; load average before: {l0}; after: {loadavg()}).",
                "", "| stage | seconds |", "|---|---:|"]
        body += [f"| {label} | {s:.1f} |" for label, s in rows]
        clabel, csecs, cmeta = cifar_epoch_time(data_dir, log)
        body.append(f"| {clabel} | {csecs:.1f} |")
        body.append(f"\nMNIST whole run, with data loading, the teacher's cached outputs and the test passes: {wall:.0f} s. "
                    f"CIFAR-10 row: experiments/cifar10-fitnet1.toml's backprop student, 1 epoch "
                    f"({cmeta.get('train')} training images, augmented), the teacher loaded untrained (see "
                    f"cifar_epoch_time).")
        sections["epochs"] = "\n".join(body)
    if sections and not a.no_write:
        text = open(a.out).read() if os.path.exists(a.out) else (
            "# Benchmarks\n\nWritten by `benchmarks/bench_models.py` (see its docstring for the method). "
            "Each section is replaced only by a run that measured it.\n")
        for key, body in sections.items():
            text = replace_section(text, key, body)
        with open(a.out, "w") as f:
            f.write(text)
        log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
