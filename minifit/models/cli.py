"""``minifit summary NAME...``: per-layer shapes, parameters and multiplications, the
papers' figures beside ours, and measured CPU inference time against the teacher."""
from __future__ import annotations

from . import build, inference_seconds, names
from .paper import FIGURES, teacher_for


def register(sub):
    p = sub.add_parser("summary", help="layers, params, mults and CPU inference time of models",
                       description="Per-layer output shape, parameters and multiplications (the paper's "
                                   "convention), totals beside the paper's figures, and measured CPU inference "
                                   "time per image with the speed-up against the teacher.")
    p.add_argument("models", nargs="+", metavar="NAME", help=f"model names, e.g. {', '.join(names()[:4])}")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default 10; 100 for wrn-*)")
    p.add_argument("--teacher", default=None, help="teacher to compare with (default: the family's)")
    p.add_argument("--bias", choices=("tied", "untied"), default=None,
                   help="maxout conv biases: one per map (tied, the default) or per map and position (untied)")
    p.add_argument("--no-time", action="store_true", help="skip the inference timing")
    p.add_argument("--batch", type=int, default=100, help="batch size for the timing (default 100)")
    p.add_argument("--layers", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="print the per-layer table (default on)")
    p.set_defaults(func=run)


def _num(v) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}K"
    return f"{v:.0f}"


def _diff(ours, paper) -> str:
    return f"{100 * (ours - paper) / paper:+.1f}%"


def describe(name, classes=None, teacher=None, timing=True, batch=100, layers=True, cache=None,
             bias=None) -> str:
    cache = {} if cache is None else cache
    classes = classes or (100 if name.startswith("wrn-") else 10)

    def get(n):
        if n not in cache:
            net = build(n, classes, **({"bias": bias} if bias else {}))
            cache[n] = (net, inference_seconds(net, batch) if timing else None)
        return cache[n]
    net, secs = get(name)
    out = [f"== {name} ({classes} classes, input {net.input_shape}) =="]
    if layers:
        out.append(f"{'layer':<8} {'type':<14} {'output':<16} {'params':>10} {'mults':>12}")
        for lname, layer, shape, params, mults in net.layer_table():
            out.append(f"{lname:<8} {type(layer).__name__:<14} {str(shape):<16} {params:>10,} {mults:>12,}")
    params, mults = net.num_params(), net.num_mults()
    p2, m2 = net.paper_counts()
    out.append(f"total: {params:,} params, {mults:,} mults/image; counting maxout as 2 pieces: "
               f"{p2:,} params, {m2:,} mults")
    kind = getattr(net, "bias_kind", None)
    if kind is not None:
        out.append(f"conv biases {kind} ({'one per map and detector position' if kind == 'untied' else 'one per map'}): "
                   f"{net.num_params('conv-bias'):,} of the params")
    fig = FIGURES.get(name)
    if fig:
        parts = [f"paper ({fig['source']}): {_num(fig['params'])} params"]
        ours_p = p2 if p2 != params else params
        parts.append(f"ours {_num(ours_p)} ({_diff(ours_p, fig['params'])})")
        if "mults" in fig:
            ours_m = m2 if m2 != mults else mults
            parts.append(f"mults paper {_num(fig['mults'])} ours {_num(ours_m)} ({_diff(ours_m, fig['mults'])})")
        out.append("; ".join(parts))
    if secs is not None:
        line = f"CPU inference: {1e3 * secs / batch:.3f} ms/image ({secs:.3f} s per batch of {batch})"
        if fig and "cpu_s_per_100" in fig:
            line += f"; paper {fig['cpu_s_per_100']} s per batch of 100 (their CPU)"
        out.append(line)
    teacher = teacher or teacher_for(name)
    if teacher and teacher != name:
        tnet, tsecs = get(teacher)
        tp2, tm2 = tnet.paper_counts()
        line = (f"vs teacher {teacher}: compression {tp2 / p2:.2f}x (paper-convention params), "
                f"mults ratio {tm2 / max(m2, 1):.2f}x")
        if secs is not None:
            line += f", measured speed-up {tsecs / secs:.2f}x"
        if fig and "speedup" in fig:
            line += f"; paper: speed-up {fig['speedup']}x, compression {fig['compression']}x"
        out.append(line)
    return "\n".join(out)


def run(args):
    cache = {}
    for name in args.models:
        print(describe(name, args.classes, args.teacher, not args.no_time, args.batch, args.layers, cache,
                       args.bias))
        print()
    return 0
