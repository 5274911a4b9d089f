"""Winograd minimal filtering F(2x2, 3x3) (Lavin & Gray 2016) for stride-1 3x3
convolutions: forward, gradient to the input, gradient to the weights.

Per 2x2 output tile (input tile d 4x4, kernel g 3x3, xi = 4*i + j over the 16 points):

    forward   Y = A^T [ U (.) V ] A,   U = G g G^T,  V = B^T d B
              sum over input maps c: M[xi] (O, T) = U[xi] (O, C) @ V[xi] (C, T)
    dx        dM = A dY A^T,  dV[xi] = U[xi]^T @ dM[xi],  dd = B dV B^T, the 4x4 dd of
              overlapping tiles summed into dx (the exact adjoint of the forward)
    dw        dU[xi] = sum over tiles dM[xi] @ V[xi]^T,  dg = G^T dU G;  tied db = sum dY
              (written here with V[xi] (C, T); the code keeps V[xi]^T, (T, C) rows)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

T = m * th * tw tiles for a chunk of m samples (th = ceil(OH/2), tw = ceil(OW/2)). Every
pass computes V and the forward's M in NHWC rows (wino_rows_chunks; the section "the
forward and V: NHWC rows"): each chunk of samples is copied once into a zero-bordered scratch
split by column parity (the padding, and the tile remainder of odd maps, come from its
border), V[xi] and M[xi] are (T, C) / (T, O) matrices held in (16, S) stacks (S padded:
stack_stride), the 16 products (T x C) @ U[xi]^T (C x O) are contiguous GEMMs (one
np.matmul on the 3-D views, single-threaded BLAS inside the thread pool), and the
transforms run along the maps, vectorised. The forward hands its consumer the chunk as
NHWC rows (evaluation passes: the residual add reads them; evaluation maxout convs reduce
each output row inside the output transform instead, output_transform_maxout_k) or, for
the training layout, transposed in 16x16 tiles to (O, m, OH*OW) (conv._conv_chunks'
contract). The backward (wino_backward) recomputes V the same way (nothing is stored
between the passes), makes dM (O, T) from the CNHW dy and sums dU = dM @ V; dx goes back
through dV = U^T @ dM (C, T) and the adjoint of the input transform, along rows of tiles.
(The training passes first ran CNHW transforms along rows of tiles, V[xi] as (C, T): those
loops, with 16 store streams, ran scalar; the rows form made training steps 1.04-1.11x
faster: tuning.WINO_MIN_C.)

When (use_winograd, measured: tuning.WINO_MIN_C): stride-1 3x3 convs with >= 12 input
maps, >= 32 output maps and >= 36 output positions, forward and backward (the
backward won on every such training layer; the forward's former extra condition on
C * min(OH, OW) went with the scalar transforms). Untied biases (O, OH, OW) are added by
conv.py's callers (the MNIST experiments' maxout convs have them). Evaluation passes
(conv2d_maxout_forward with channels_last, bn_relu_conv2d_forward) take the same rule
(use_winograd_rows, with tuning.WINO_ROWS) and keep the NHWC rows; BN and ReLU are folded
into the first copy of x there.

Tile sizes: only F(2x2, 3x3). Its transforms' coefficients (0, +-1, +-1/2) are exact in
binary, and its float32 error on fitnet-1 / fitnet-4 layers with CIFAR-10 activations was
at or below the im2col path's (forward 2.3-5.3e-7 of max |y| against 4.2e-7-1.2e-6: the
sums over C are 9x shorter; dx up to 2.3x im2col's, dw below it). F(4x4, 3x3) (points
0, +-1, +-2, inf, emulated in float32) was 1.3-3.7e-6: 2-4x im2col's and above the tested
bound eps sqrt(9C) on one layer, so it is not implemented (the measurements: tuning.py,
after WINO_CHUNK_ELEMS). Error bound held by tests/kernels/test_conv_winograd.py: max |err| <= eps sqrt(K)
max |ref|, K = 9C (forward), 9O (dx), N*OH*OW (dw, db).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import runtime, tuning
from .layouts import CNHW, NHWC, U, nc, pl, rows_in, rows_to_cnhw_k
from .patches import copy_run, no_pre
from .pool import mo_row, pool_rows
from .runtime import kern, parallel, single_blas

# the filter transform (_filter_k and its adjoint _filter_grad_k are this matrix, written out)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def use_winograd(c, o, kh, kw, stride, oh, ow):
    """True when a conv of c input maps, o output maps, kernel (kh, kw), ``stride``,
    output (oh, ow) goes by Winograd F(2x2, 3x3), forward and backward: stride-1 3x3
    kernels with at least tuning.WINO_MIN_C input maps, tuning.WINO_MIN_O output maps and
    tuning.WINO_MIN_P output positions. Any bias: an untied one (O, OH, OW) is added by the
    callers (conv.py) as on the other paths."""
    return (kh == 3 and kw == 3 and tuple(stride) == (1, 1) and c >= tuning.WINO_MIN_C
            and o >= tuning.WINO_MIN_O and oh * ow >= tuning.WINO_MIN_P)


def use_winograd_rows(c, o, kh, kw, stride, oh, ow):
    """True when an evaluation-mode conv with NHWC rows out (conv2d_maxout_forward with
    channels_last, bn_relu_conv2d_forward) goes by wino_rows_chunks: with tuning.WINO_ROWS,
    use_winograd's shape rule (measured: tuning.py)."""
    return tuning.WINO_ROWS and use_winograd(c, o, kh, kw, stride, oh, ow)


def filter_transform(w):
    """w (O, C, 3, 3) -> U (16, O, C): U[4i+j] = (G g G^T)[i, j] for every (o, c)."""
    o, c = w.shape[:2]
    u = np.empty((16, o, c), dtype=w.dtype)
    _filter_k(np.ascontiguousarray(w).reshape(o, c, 9), u)
    return u


def filter_grad(du):
    """The adjoint of filter_transform: dU (16, O, C) -> dg (O, C, 3, 3) = G^T dU G."""
    dg = np.empty((du.shape[1], du.shape[2], 9), dtype=du.dtype)
    _filter_grad_k(np.ascontiguousarray(du), dg)
    return dg.reshape(du.shape[1], du.shape[2], 3, 3)


@kern
def _filter_k(g, u):
    """u[4i+j, o, c] = (G g[o, c] G^T)[i, j] (g (O, C, 9), row-major 3x3). Rows t = G g
    (t0 = g0, t1 = (g0 + g1 + g2) / 2, t2 = (g0 - g1 + g2) / 2, t3 = g2), then the same
    on the columns. (np.einsum took 17 ms for 256 x 128 kernels, this about 0.1.)"""
    O = g.shape[0]
    C = g.shape[1]
    h = np.float32(0.5)   # (exact in float64 too)
    t = np.empty((4, 3), dtype=g.dtype)
    for o in range(O):
        for c in range(C):
            for l in range(3):
                g0 = g[o, c, l]
                g1 = g[o, c, 3 + l]
                g2 = g[o, c, 6 + l]
                t[0, l] = g0
                t[1, l] = (g0 + g1 + g2) * h
                t[2, l] = (g0 - g1 + g2) * h
                t[3, l] = g2
            for i in range(4):
                u[4 * i, o, c] = t[i, 0]
                u[4 * i + 1, o, c] = (t[i, 0] + t[i, 1] + t[i, 2]) * h
                u[4 * i + 2, o, c] = (t[i, 0] - t[i, 1] + t[i, 2]) * h
                u[4 * i + 3, o, c] = t[i, 2]


@kern
def _filter_grad_k(du, dg):
    """dg[o, c] = G^T dU[:, o, c] G (dg (O, C, 9)): the transpose of _filter_k's two passes."""
    O = du.shape[1]
    C = du.shape[2]
    h = np.float32(0.5)
    s = np.empty((3, 4), dtype=du.dtype)
    for o in range(O):
        for c in range(C):
            for j in range(4):
                d0 = du[j, o, c]
                d1 = du[4 + j, o, c]
                d2 = du[8 + j, o, c]
                d3 = du[12 + j, o, c]
                s[0, j] = d0 + (d1 + d2) * h
                s[1, j] = (d1 - d2) * h
                s[2, j] = (d1 + d2) * h + d3
            for k in range(3):
                dg[o, c, 3 * k] = s[k, 0] + (s[k, 1] + s[k, 2]) * h
                dg[o, c, 3 * k + 1] = (s[k, 1] - s[k, 2]) * h
                dg[o, c, 3 * k + 2] = (s[k, 1] + s[k, 2]) * h + s[k, 3]


def tiles(oh, ow):
    """(th, tw): 2x2 output tiles per column / row of the map."""
    return (oh + 1) // 2, (ow + 1) // 2


def chunk_samples(n, c, o, t_per, threads, elems=None):
    """Samples per chunk: the chunk's V and M (16 (C + O) T elements) under ``elems``
    (default tuning.WINO_CHUNK_ELEMS), but at least tuning.WINO_MIN_TILES tiles (the
    GEMMs' long side) and one sample; every thread at least one chunk."""
    nb = max(1, (elems or tuning.WINO_CHUNK_ELEMS) // (16 * (c + o) * t_per),
             -(-tuning.WINO_MIN_TILES // t_per))
    return max(1, min(nb, -(-n // threads)))


# ------------------------------------------------------------------ the backward's CNHW transforms
# dM from the CNHW dy and dx from dV (C, T), one map at a time (the 16 points' rows of
# dM / dV are contiguous in the tile index). A loop that touches the 16 streams of dM / dV
# at once needs more runtime alias checks than LLVM allows, so it runs scalar (forcing the
# vectoriser past its limit, llvmlite's -vectorize-memory-check-threshold, made the CNHW
# input transform 1.3-3.4x slower on 7 layer shapes in one run, 0.9-1.7x in a noisier
# one: the checks run at every row of tiles). So the output adjoint first splits a map's
# tiles' dY into four runs (one scalar pass, 4 stores per tile), then makes each point's
# row by its own loop (vectorised): per call against the tile-by-tile loop (4 loads, 16
# stores), one thread, batch 128, the chunk sizes chunk_samples picks, medians of 11,
# 2026-12-07 (Intel Xeon): 0.41x the time at 16 -> 32 maps of 32x32, 0.44-0.55x at
# 16x16 .. 24x24, 0.56-0.69x at 10x10 .. 12x12, 0.68-0.78x at 8x8, 0.82x at 6x6
# outputs (bitwise the same values); training steps 1.05x faster
# (fitnet-1, wrn-10-2, fitnet-4) and 1.01x (mnist-fitnet) on the wall clock, 1.03-1.07x
# on the CPU clock (benchmarks/ab_paths.py --kinds train, medians of 15, the old kernel
# behind a temporary flag). The input adjoint keeps the padded plane of dx as its even
# and odd columns (xe, xo: (2*th+2, tw+1)), so the columns 2b..2b+3 of tile b are xe[b],
# xo[b], xe[b+1], xo[b+1], and runs scalar along rows of tiles.
@njit(inline="always")
def _merge_plane(xe, xo, H, W, ph, pw, Wh, plane):
    """plane[h, t] = the padded position (h + ph, t + pw) of the split scratch xe / xo
    (padded column q at xe[q // 2] for even q, xo[q // 2] for odd q)."""
    for h in range(H):
        r = U((h + ph) * Wh)
        for j in range(U((pw + 1) // 2), U((W + pw + 1) // 2)):
            plane[h, U(j + j - U(pw))] = xe[r + j]
        for j in range(U(pw // 2), U((W + pw) // 2)):
            plane[h, U(j + j + U(1) - U(pw))] = xo[r + j]


@njit(inline="always")
def _a_row(x0, x1, i):
    """Row i of A x for A = [[1, 0], [1, 1], [1, -1], [0, -1]] (i a constant where it is
    called: the branches fold away)."""
    if i == 0:
        return x0
    if i == 1:
        return x0 + x1
    if i == 2:
        return x0 - x1
    return -x1


@njit(inline="always")
def _dm_run(df, d, sc, T, i, j):
    """dM[4i + j] = (A dY A^T)[i, j] of T tiles from their split dY (sc: y00 | y01 | y10 |
    y11, T values each) into df[d..d+T): the columns (j) of each dY row, then the rows (i);
    one loop with 1-4 loads and 1 store, vectorised."""
    for t in range(T):
        y00 = sc[t]
        y01 = sc[T + t]
        y10 = sc[T + T + t]
        y11 = sc[T + T + T + t]
        df[d + t] = _a_row(_a_row(y00, y01, j), _a_row(y10, y11, j), i)


@kern
def output_adjoint_k(dyb, n0, m, th, tw, dm):
    """dM = A dY A^T of every 2x2 tile of samples n0..n0+m-1 of dyb (O, N, oh, ow) (the
    remainder tiles of odd maps padded with zeros) into dm (16, S) (row xi: the (O,
    m*th*tw) matrix dM[xi]). Per map o: the four dY of its tiles in the chunk split into
    four contiguous runs (y00, y01, y10, y11; the one scalar pass), then each point's row
    of those tiles by one vectorised loop (_dm_run). (Written tile by tile, 4 loads and 16
    stores, this ran scalar: 16 store streams.)"""
    O = dyb.shape[0]
    oh = dyb.shape[2]
    ow = dyb.shape[3]
    T = U(th * tw)
    df = dm.reshape(-1)
    ST = U(dm.shape[1])
    fh = oh // 2
    fw = ow // 2
    R = U(m) * T   # one map's tiles in the chunk: dM[xi][o] is a contiguous run of R
    sc = np.zeros(4 * m * th * tw, dtype=dyb.dtype)   # (zeros past an odd map's edge stay)
    for o in range(O):
        for n in range(m):
            p = dyb[o, n0 + n].reshape(-1)
            for a in range(th):
                t0 = U(n) * T + U(a * tw)
                r0 = U(2 * a * ow)
                for b in range(U(fw)):
                    sc[t0 + b] = p[r0 + b + b]
                    sc[R + t0 + b] = p[r0 + b + b + U(1)]
                if fw < tw:   # odd ow: the last tile's right column is zero
                    sc[t0 + U(fw)] = p[r0 + U(2 * fw)]
                if a < fh:
                    r1 = r0 + U(ow)
                    for b in range(U(fw)):
                        sc[R + R + t0 + b] = p[r1 + b + b]
                        sc[R + R + R + t0 + b] = p[r1 + b + b + U(1)]
                    if fw < tw:
                        sc[R + R + t0 + U(fw)] = p[r1 + U(2 * fw)]
        d = U(o) * R
        _dm_run(df, d, sc, R, 0, 0)
        _dm_run(df, d + ST, sc, R, 0, 1)
        _dm_run(df, d + U(2) * ST, sc, R, 0, 2)
        _dm_run(df, d + U(3) * ST, sc, R, 0, 3)
        _dm_run(df, d + U(4) * ST, sc, R, 1, 0)
        _dm_run(df, d + U(5) * ST, sc, R, 1, 1)
        _dm_run(df, d + U(6) * ST, sc, R, 1, 2)
        _dm_run(df, d + U(7) * ST, sc, R, 1, 3)
        _dm_run(df, d + U(8) * ST, sc, R, 2, 0)
        _dm_run(df, d + U(9) * ST, sc, R, 2, 1)
        _dm_run(df, d + U(10) * ST, sc, R, 2, 2)
        _dm_run(df, d + U(11) * ST, sc, R, 2, 3)
        _dm_run(df, d + U(12) * ST, sc, R, 3, 0)
        _dm_run(df, d + U(13) * ST, sc, R, 3, 1)
        _dm_run(df, d + U(14) * ST, sc, R, 3, 2)
        _dm_run(df, d + U(15) * ST, sc, R, 3, 3)


@njit(inline="always")
def _adj_cols(vf, i, ST):
    """Tile i of dV (16 points, stride ST): the row pass of B dV B^T (per padded row k of
    the tile, e_k(l) = (B dV)[k, l]), then its column pass split by where it lands:
    (col 2b, col 2b+1, col 2b+2, col 2b+3) for each row k, 16 values."""
    v00 = vf[i]
    v01 = vf[i + ST]
    v02 = vf[i + U(2) * ST]
    v03 = vf[i + U(3) * ST]
    v10 = vf[i + U(4) * ST]
    v11 = vf[i + U(5) * ST]
    v12 = vf[i + U(6) * ST]
    v13 = vf[i + U(7) * ST]
    v20 = vf[i + U(8) * ST]
    v21 = vf[i + U(9) * ST]
    v22 = vf[i + U(10) * ST]
    v23 = vf[i + U(11) * ST]
    v30 = vf[i + U(12) * ST]
    v31 = vf[i + U(13) * ST]
    v32 = vf[i + U(14) * ST]
    v33 = vf[i + U(15) * ST]
    # rows: B dV (d0 = v0, d1 = v1 - v2 + v3, d2 = v1 + v2 - v0, d3 = -v3)
    e10 = v10 - v20 + v30
    e11 = v11 - v21 + v31
    e12 = v12 - v22 + v32
    e13 = v13 - v23 + v33
    e20 = v10 + v20 - v00
    e21 = v11 + v21 - v01
    e22 = v12 + v22 - v02
    e23 = v13 + v23 - v03
    # columns: (.) B^T, the same combinations
    return (v00, v01 - v02 + v03, v01 + v02 - v00, -v03,
            e10, e11 - e12 + e13, e11 + e12 - e10, -e13,
            e20, e21 - e22 + e23, e21 + e22 - e20, -e23,
            -v30, v32 - v31 - v33, v30 - v31 - v32, v33)


@kern
def input_adjoint_k(dv, n0, m, ph, pw, th, tw, dxb, dcf):
    """dd = B dV B^T of every tile of dv (16, S) (row xi: the (C, m*th*tw) matrix dV[xi]),
    the 4x4 dd of overlapping tiles summed into the even / odd column scratches, whose
    interior (the padding cropped) overwrites the planes of samples n0..n0+m-1 of dx (its
    canonical buffer; CNHW with ``dcf``). Each scratch column j gathers columns 2j, 2j+1 of tile j and 2j+2, 2j+3 of
    tile j-1 (a gather, not a scatter: no two iterations of the loop write one value)."""
    N, C = nc(dxb, dcf)
    H = dxb.shape[2]
    W = dxb.shape[3]
    Wh = tw + 1
    xe = np.empty((2 * th + 2) * Wh, dtype=dxb.dtype)
    xo = np.empty((2 * th + 2) * Wh, dtype=dxb.dtype)
    T = th * tw
    vf = dv.reshape(-1)
    ST = U(dv.shape[1])
    zero = np.zeros(1, dxb.dtype)[0]
    for n in range(m):
        for c in range(C):
            xe[:] = 0
            xo[:] = 0
            for a in range(th):
                i0 = U(c * m * T + n * T + a * tw)
                r0 = U(2 * a * Wh)
                r1 = r0 + U(Wh)
                r2 = r1 + U(Wh)
                r3 = r2 + U(Wh)
                # scratch column j gathers tile j's first two columns (f) and tile j-1's last
                # two (g): each tile's B dV B^T is computed once, its last two columns
                # carried to the next column
                g2 = g3 = g6 = g7 = g10 = g11 = g14 = g15 = zero
                for j in range(U(tw)):
                    f = _adj_cols(vf, i0 + j, ST)
                    xe[r0 + j] += f[0] + g2
                    xo[r0 + j] += f[1] + g3
                    xe[r1 + j] += f[4] + g6
                    xo[r1 + j] += f[5] + g7
                    xe[r2 + j] += f[8] + g10
                    xo[r2 + j] += f[9] + g11
                    xe[r3 + j] += f[12] + g14
                    xo[r3 + j] += f[13] + g15
                    g2 = f[2]
                    g3 = f[3]
                    g6 = f[6]
                    g7 = f[7]
                    g10 = f[10]
                    g11 = f[11]
                    g14 = f[14]
                    g15 = f[15]
                j = U(tw)   # tile tw-1's last two columns
                xe[r0 + j] += g2
                xo[r0 + j] += g3
                xe[r1 + j] += g6
                xo[r1 + j] += g7
                xe[r2 + j] += g10
                xo[r2 + j] += g11
                xe[r3 + j] += g14
                xo[r3 + j] += g15
            _merge_plane(xe, xo, H, W, ph, pw, Wh, pl(dxb, dcf, n0 + n, c))


# ------------------------------------------------------------------ the passes
def stack_stride(k):
    """Elements between two points xi of a (16, S) stack whose rows hold k elements: k
    rounded up to 256, plus 32, so that the 16 rows' streams never sit a multiple of 4 KiB
    apart. (With S = k the transforms of 16x16 and 32x32 maps, k a multiple of 1024, ran
    3-7x slower than those of 24x24 maps per element: every point's store went to the same
    cache set.)"""
    return -(-k // 256) * 256 + 32


def _stack(buf, rows, cols):
    """The (16, rows, cols) matrices at the start of each row of a (16, S) stack (a view)."""
    return buf[:, :rows * cols].reshape(16, rows, cols)


def _split_scratch(nb, th, tw, c, dt):
    """A chunk's split copy of x for _v_rows (its zero border is the padding: split_pad_k
    writes only the interior, so it is zeroed once and reused)."""
    return np.zeros((nb, 2 * th + 2, 2, tw + 1, c), dt)


def _v_rows(xb, lay, n0, m, pad, pre, xs, th, tw, vb):
    """V[xi] of samples n0..n0+m-1 as (m*th*tw, C) rows into the stack vb (returned as a
    (16, m*th*tw, C) view): the split copy into xs, then the vectorised transform."""
    split_pad_k(xb, lay, n0, m, pad[0], pad[1], xs, *pre)
    input_transform_rows_k(xs, m, th, tw, vb)
    return _stack(vb, m * th * tw, xs.shape[4])


def _forward_setup(x, w, b, oh, ow):
    """-> (n, c, o, dtype, th, tw, tiles per sample, OH*OW, bias (O,): zeros for None)."""
    th, tw = tiles(oh, ow)
    bias = np.zeros(w.shape[0], x.dtype) if b is None else np.ascontiguousarray(b)
    return x.shape[0], x.shape[1], w.shape[0], x.dtype, th, tw, th * tw, oh * ow, bias


def wino_backward(dyc, x, w, pad, need_dx):
    """conv2d_backward of a stride-1 3x3 conv by F(2x2, 3x3), tied or no bias -> (dx in
    CNHW layout | None, dw (O, C, 3, 3), db (O,)). dyc: dy as a C-contiguous (O, N, OH, OW)
    buffer. Per chunk of samples: V from x (recomputed, as (tiles, C) rows by the forward's
    transforms), dM (O, tiles) from dy, dU += dM @ V, and with ``need_dx`` dV = U^T @ dM
    (C, tiles) into V's buffer, then its adjoint transform into dx.
    dU and db are summed in a fixed order whatever the thread scheduling (as
    conv2d_backward): group g adds its contiguous run of chunks in order, then the groups
    are added in order."""
    o, n, oh, ow = dyc.shape
    c = x.shape[1]
    h, wd = x.shape[2], x.shape[3]
    dt = x.dtype
    ph, pw = pad
    th, tw = tiles(oh, ow)
    t1 = th * tw
    xb, lay = rows_in(x)
    pre = no_pre(dt)
    ut = np.ascontiguousarray(filter_transform(w).transpose(0, 2, 1)) if need_dx else None
    nb = chunk_samples(n, c, o, t1, runtime.GEMM_THREADS)
    dxb = np.empty((c, n, h, wd), dtype=dt) if need_dx else None
    chunks = -(-n // nb)
    groups = min(runtime.GEMM_THREADS, chunks)
    acc = [None] * groups
    dbs = [None] * groups

    def task(g, _w):
        vb = np.empty((16, stack_stride(c * nb * t1)), dt)
        mb = np.empty((16, stack_stride(o * nb * t1)), dt)
        xs = _split_scratch(nb, th, tw, c, dt)
        tmp = None
        for i in range(chunks * g // groups, chunks * (g + 1) // groups):
            n0 = i * nb
            m = min(nb, n - n0)
            vr = _v_rows(xb, lay, n0, m, pad, pre, xs, th, tw, vb)   # V[xi] as (tiles, C) rows
            output_adjoint_k(dyc, n0, m, th, tw, mb)
            dm = _stack(mb, o, m * t1)
            # db: dM's point (1, 1) is A[1] dY A[1]^T with A[1] = (1, 1), the sum of the
            # tile's four dY (zeros past an odd map's edge), so db is dM[5] summed over the
            # tiles: O*T values in cache instead of a separate pass over all of dy.
            # Training steps against that pass (benchmarks/ab_paths.py --kinds train, medians
            # of 15, 2026-12-07, Intel Xeon 2 cores), CPU clock / wall: fitnet-1 1.04 / 0.99,
            # mnist-fitnet 1.04 / 1.00, wrn-10-2 1.01 / 1.05 faster; fitnet-4 1.01 (CPU)
            if acc[g] is None:
                acc[g] = np.matmul(dm, vr)
                tmp = np.empty_like(acc[g])
                dbs[g] = dm[5].sum(axis=1)
            else:
                np.matmul(dm, vr, out=tmp)
                acc[g] += tmp
                dbs[g] += dm[5].sum(axis=1)
            if need_dx:   # V is dead: dV (C, T) takes its buffer
                np.matmul(ut, dm, out=_stack(vb, c, m * t1))
                input_adjoint_k(vb, n0, m, ph, pw, th, tw, dxb, True)

    with single_blas():
        parallel(task, groups, runtime.GEMM_THREADS)
    total, db = acc[0], dbs[0]
    for a, d in zip(acc[1:], dbs[1:]):
        total = total + a
        db = db + d
    return (dxb.swapaxes(0, 1) if need_dx else None), filter_grad(total), db


# ------------------------------------------------------------------ the forward and V: NHWC rows
# The transforms vectorise along the maps: each sample is first copied into a
# zero-bordered scratch xs (Hp, 2, Wh, C) whose padded columns are split by parity (column
# q at [q & 1, q >> 1]), so that in a row of tiles the C values of tile b's column 2b + l
# sit at one fixed offset from b*C for every b. Each of the 16 points' rows of a tile row,
# V[xi][tiles of the row] (tw, C), is then one loop over tw*C contiguous values with 4
# loads and 1 store, and each output position's row one loop over O values with 4 loads
# and 1 store: few enough distinct streams for LLVM's runtime alias checks (at most 8),
# so it vectorises them. (The first training forms ran along rows of tiles in CNHW, 16
# store streams, scalar: the copy and this input transform together took 0.53-0.76x of
# that one's time on wrn-10-2, fitnet-1 and mnist-fitnet layers, two runs:
# tuning.WINO_MIN_C.)
@kern
def split_pad_k(xb, lay, n0, m, ph, pw, xs, pre, scale, shift):
    """Samples n0..n0+m-1 of xb (layout ``lay``: NCHW, CNHW or NHWC) into xs (m, Hp, 2,
    Wh, C): padded position (r, q) = (h + ph, w + pw) at xs[n, r, q & 1, q >> 1]. Only
    the interior is written: the border keeps the zeros the caller allocated it with.
    ``pre, scale, shift``: as im2col_k's (relu(x * scale[c] + shift[c]) read instead)."""
    if lay == NHWC:
        H = xb.shape[1]
        W = xb.shape[2]
    else:
        H = xb.shape[2]
        W = xb.shape[3]
    C = xs.shape[4]
    Wh = xs.shape[3]
    Hp = xs.shape[1]
    uC = U(C)
    sf = xs.reshape(-1)
    xf = xb.reshape(-1)
    for n in range(m):
        for h in range(H):
            r = U((n * Hp + h + ph) * 2)
            for t in range(W):
                q = t + pw
                d = ((r + U(q & 1)) * U(Wh) + U(q >> 1)) * uC
                if lay == NHWC:
                    copy_run(xf, U((((n0 + n) * H + h) * W + t) * C), sf, d, uC, pre, scale, shift)
                else:
                    for c in range(C):
                        v = pl(xb, lay == CNHW, n0 + n, c)[h, t]
                        if pre:
                            v = v * scale[c] + shift[c]
                            v = v if v > 0 else 0
                        sf[d + U(c)] = v


@njit(inline="always")
def _v_run(vf, dst, sf, s00, s10, s01, s11, sr, sc, L):
    """vf[dst + q] = (d00 + sr d10) + sc (d01 + sr d11) for q < L, d.. = sf[s.. + q]: one
    point's V over a row of tiles (rows combined first, then columns; sr, sc = +-1)."""
    for q in range(L):
        a0 = sf[s00 + q] - sf[s10 + q] if sr < 0 else sf[s00 + q] + sf[s10 + q]
        a1 = sf[s01 + q] - sf[s11 + q] if sr < 0 else sf[s01 + q] + sf[s11 + q]
        vf[dst + q] = a0 - a1 if sc < 0 else a0 + a1


@kern
def input_transform_rows_k(xs, m, th, tw, v):
    """V = B^T d B of every tile of the split scratch xs (m, Hp, 2, Wh, C) into v (16, S):
    row xi holds V[xi] as the (m*th*tw, C) matrix whose row (n*th + a)*tw + b is tile (a,
    b) of sample n. Tile b's padded columns 2b + l are xs[.., l & 1, b + (l >> 1)]."""
    C = xs.shape[4]
    Wh = xs.shape[3]
    Hp = xs.shape[1]
    sf = xs.reshape(-1)
    vf = v.reshape(-1)
    ST = U(v.shape[1])
    L = U(tw * C)
    uC = U(C)
    plane = U(2 * Wh * C)   # one padded row: its even, then its odd columns
    half = U(Wh * C)
    for n in range(m):
        for a in range(th):
            r0 = U(n * Hp + 2 * a) * plane
            dst = U((n * th + a) * tw) * uC
            # the padded rows 2a + k of the tile row, and tile b's padded columns 2b + l at
            # parity l & 1, offset (l >> 1) * C (the signs written out: constants)
            rw = (r0, r0 + plane, r0 + U(2) * plane, r0 + U(3) * plane)
            cl = (U(0), half, uC, half + uC)
            _v_run(vf, U(0) * ST + dst, sf, rw[0] + cl[0], rw[2] + cl[0], rw[0] + cl[2], rw[2] + cl[2], -1, -1, L)
            _v_run(vf, U(1) * ST + dst, sf, rw[0] + cl[1], rw[2] + cl[1], rw[0] + cl[2], rw[2] + cl[2], -1, 1, L)
            _v_run(vf, U(2) * ST + dst, sf, rw[0] + cl[2], rw[2] + cl[2], rw[0] + cl[1], rw[2] + cl[1], -1, -1, L)
            _v_run(vf, U(3) * ST + dst, sf, rw[0] + cl[1], rw[2] + cl[1], rw[0] + cl[3], rw[2] + cl[3], -1, -1, L)
            _v_run(vf, U(4) * ST + dst, sf, rw[1] + cl[0], rw[2] + cl[0], rw[1] + cl[2], rw[2] + cl[2], 1, -1, L)
            _v_run(vf, U(5) * ST + dst, sf, rw[1] + cl[1], rw[2] + cl[1], rw[1] + cl[2], rw[2] + cl[2], 1, 1, L)
            _v_run(vf, U(6) * ST + dst, sf, rw[1] + cl[2], rw[2] + cl[2], rw[1] + cl[1], rw[2] + cl[1], 1, -1, L)
            _v_run(vf, U(7) * ST + dst, sf, rw[1] + cl[1], rw[2] + cl[1], rw[1] + cl[3], rw[2] + cl[3], 1, -1, L)
            _v_run(vf, U(8) * ST + dst, sf, rw[2] + cl[0], rw[1] + cl[0], rw[2] + cl[2], rw[1] + cl[2], -1, -1, L)
            _v_run(vf, U(9) * ST + dst, sf, rw[2] + cl[1], rw[1] + cl[1], rw[2] + cl[2], rw[1] + cl[2], -1, 1, L)
            _v_run(vf, U(10) * ST + dst, sf, rw[2] + cl[2], rw[1] + cl[2], rw[2] + cl[1], rw[1] + cl[1], -1, -1, L)
            _v_run(vf, U(11) * ST + dst, sf, rw[2] + cl[1], rw[1] + cl[1], rw[2] + cl[3], rw[1] + cl[3], -1, -1, L)
            _v_run(vf, U(12) * ST + dst, sf, rw[1] + cl[0], rw[3] + cl[0], rw[1] + cl[2], rw[3] + cl[2], -1, -1, L)
            _v_run(vf, U(13) * ST + dst, sf, rw[1] + cl[1], rw[3] + cl[1], rw[1] + cl[2], rw[3] + cl[2], -1, 1, L)
            _v_run(vf, U(14) * ST + dst, sf, rw[1] + cl[2], rw[3] + cl[2], rw[1] + cl[1], rw[3] + cl[1], -1, -1, L)
            _v_run(vf, U(15) * ST + dst, sf, rw[1] + cl[1], rw[3] + cl[1], rw[1] + cl[3], rw[3] + cl[3], -1, -1, L)


@njit(inline="always")
def _out_rows(mf, src, ST, L, rs):
    """The row pass of Y = A^T M A over one row of tiles (L = tw * O values of each point
    from mf[src + xi * ST]) into rs: R0_j = M(0,j) + M(1,j) + M(2,j) at rs[j * L],
    R1_j = M(1,j) - M(2,j) - M(3,j) at rs[(4 + j) * L]."""
    for j in range(4):
        s0 = U(j) * ST + src
        s1 = s0 + U(4) * ST
        s2 = s1 + U(4) * ST
        s3 = s2 + U(4) * ST
        d0 = U(j) * L
        d1 = d0 + U(4) * L
        for q in range(L):
            rs[d0 + q] = mf[s0 + q] + mf[s1 + q] + mf[s2 + q]
        for q in range(L):
            rs[d1 + q] = mf[s1 + q] - mf[s2 + q] - mf[s3 + q]


@njit(inline="always")
def _out_cols(rs, L, uO, tw, ow, u, bias, bstep, p0, zf, z0):
    """The column pass of output row u of a row of tiles (rs from _out_rows): Y(u, 2b) =
    R_u0 + R_u1 + R_u2, Y(u, 2b+1) = R_u1 - R_u2 - R_u3, + the bias row of the position
    (row (p0 + t) * bstep for column t: bstep 0 for a tied bias), into zf[z0 + t*O ..]
    for the ow columns t of the row."""
    for b in range(tw):
        e0 = U(4 * u) * L + U(b) * uO
        e1 = e0 + L
        e2 = e1 + L
        e3 = e2 + L
        p = z0 + U(2 * b) * uO
        br = bias[(p0 + 2 * b) * bstep]
        for o in range(uO):
            zf[p + o] = rs[e0 + o] + rs[e1 + o] + rs[e2 + o] + br[o]
        if 2 * b + 1 < ow:
            p1 = p + uO
            br = bias[(p0 + 2 * b + 1) * bstep]
            for o in range(uO):
                zf[p1 + o] = rs[e1 + o] - rs[e2 + o] - rs[e3 + o] + br[o]


@kern
def output_transform_rows_k(mm, m, th, tw, oh, ow, bias, z, rs):
    """Y = A^T M A + bias of every tile of mm (16, S) (row xi: the (m*th*tw, O) matrix
    M[xi], rows as input_transform_rows_k's) into z (m*oh*ow, O), the NHWC rows of the
    chunk; bias (1, O). Remainder tiles of odd maps write only their first row / column.
    rs: scratch of >= 8*tw*O values (the row pass of one row of tiles)."""
    uO = U(z.shape[1])
    L = U(tw) * uO
    mf = mm.reshape(-1)
    zf = z.reshape(-1)
    ST = U(mm.shape[1])
    for n in range(m):
        for a in range(th):
            _out_rows(mf, U((n * th + a) * tw) * uO, ST, L, rs)
            for u in range(2 if 2 * a + 1 < oh else 1):
                _out_cols(rs, L, uO, tw, ow, u, bias, 0, 0, zf, U((n * oh + 2 * a + u) * ow) * uO)


@kern
def output_transform_maxout_k(mm, m, th, tw, oh, ow, bias, bstep, pieces, pool, n0, y, arg, mv, mi, rs, zr):
    """Maxout (with ``pool`` = (kh, kw, sh, sw, yh, yw), not None: then max pool) of Y =
    A^T M A + bias of every tile of mm (16, S) (as output_transform_rows_k) into the NHWC
    rows of samples n0..n0+m-1 of y, arg (N*yh*yw, C), Y never stored whole: each output
    row goes through the scratch zr (>= ow*O values, in L1) and is reduced at once
    (pool.mo_row, maps piece-major: q*C + c) -- bitwise what output_transform_rows_k then
    pool.mo_rows_k give (the same sums, selects and arg encodings). bias (1 or OH*OW, O):
    row p * bstep for position p (bstep 0: tied). mv, mi: scratch (OH*OW, C) of one
    sample's maxout when pooling; rs as output_transform_rows_k's."""
    uC = U(y.shape[1])
    uO = U(pieces) * uC
    L = U(tw) * uO
    HW = oh * ow
    mf = mm.reshape(-1)
    zf = zr.reshape(-1)
    ST = U(mm.shape[1])
    for n in range(m):
        for a in range(th):
            _out_rows(mf, U((n * th + a) * tw) * uO, ST, L, rs)
            for u in range(2 if 2 * a + 1 < oh else 1):
                p0 = (2 * a + u) * ow
                _out_cols(rs, L, uO, tw, ow, u, bias, bstep, p0, zf, U(0))
                for t in range(ow):
                    row = zf[U(t) * uO:U(t + 1) * uO]
                    if pool is None:   # args: the piece q
                        r = (n0 + n) * HW + p0 + t
                        mo_row(row, pieces, uC, y[r], arg[r], 0, 1)
                    else:   # args: q * HW + p (mo_rows_k's pooled encoding)
                        mo_row(row, pieces, uC, mv[p0 + t], mi[p0 + t], p0 + t, HW)
        if pool is not None:
            pool_rows(mv, mi, oh, ow, pool[0], pool[1], pool[2], pool[3], pool[4], pool[5], y, arg,
                      (n0 + n) * pool[4] * pool[5])


def wino_rows_chunks(x, w, b, pad, oh, ow, consume, pre=None, rows_out=None, contiguous=False, maxout=None):
    """conv2d_forward(x, w, b, 1, pad) of a 3x3 kernel by F(2x2, 3x3) with NHWC rows out,
    per chunk of samples over the thread pool, the contract of conv._conv_chunks(rows=True):
    consume(z, n0) gets each chunk's output as z (O, m, OH*OW), a transposed view of its
    NHWC rows (m*OH*OW, O) (valid only during the call); with ``rows_out`` ((N*OH*OW, O))
    those rows are rows_out's from n0*OH*OW on; with ``contiguous``, z is a C-ordered copy
    made in 16x16 tiles (for consumers that read z along positions). b: None or tied (O,);
    ``pre``: (True, scale, shift) reads relu(x * scale[c] + shift[c]) instead of x.
    ``maxout`` = (pieces, pool, y, arg, bias, bstep): no z and no consume; each chunk is
    reduced by output_transform_maxout_k into the NHWC rows y, arg (its pool, bias and
    bstep; w's maps piece-major, b None)."""
    n, c, o, dt, th, tw, t1, p, bias = _forward_setup(x, w, b, oh, ow)
    xb, lay = rows_in(x)
    ut = np.ascontiguousarray(filter_transform(w).transpose(0, 2, 1))   # (16, C, O)
    pre = no_pre(dt) if pre is None else pre
    nb = chunk_samples(n, c, o, t1, runtime.GEMM_THREADS, tuning.WINO_ROWS_CHUNK_ELEMS)
    bufs = {}

    def task(i, wid):
        got = bufs.get(wid)
        if got is None:
            cy = o if maxout is None else o // maxout[0]
            sp = p if maxout is not None and maxout[1] is not None else 1
            got = bufs[wid] = (_split_scratch(nb, th, tw, c, dt),
                               np.empty((16, stack_stride(nb * t1 * c)), dt),
                               np.empty((16, stack_stride(nb * t1 * o)), dt),
                               np.empty(8 * tw * o, dt),
                               np.empty((nb * p, o), dt) if rows_out is None and maxout is None else None,
                               np.empty(o * nb * p, dt) if contiguous else None,
                               (np.empty((sp, cy), dt), np.empty((sp, cy), np.int32), np.empty(ow * o, dt)))
        xs, vb, mb, rs, zb, zc, (mv, mi, zr) = got
        n0 = i * nb
        m = min(nb, n - n0)
        np.matmul(_v_rows(xb, lay, n0, m, pad, pre, xs, th, tw, vb), ut, out=_stack(mb, m * t1, o))
        if maxout is not None:
            pieces, pool, y, arg, bmo, bstep = maxout
            output_transform_maxout_k(mb, m, th, tw, oh, ow, bmo, bstep, pieces, pool, n0, y, arg, mv, mi, rs, zr)
            return
        z = zb[:m * p] if rows_out is None else rows_out[n0 * p:(n0 + m) * p]
        output_transform_rows_k(mb, m, th, tw, oh, ow, bias.reshape(1, o), z, rs)
        if contiguous:
            zt = zc[:o * m * p].reshape(o, m * p)
            rows_to_cnhw_k(z, 0, zt, zt[:, :0])
            consume(zt.reshape(o, m, p), n0)
        else:
            consume(z.T.reshape(o, m, p), n0)

    with single_blas():
        parallel(task, -(-n // nb), runtime.GEMM_THREADS)
