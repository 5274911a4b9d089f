"""Plain NumPy reference kernels: the definition every other implementation is held to.

Simple and obviously correct rather than fast (loops over kernel offsets and pool windows).
Layout NCHW; ``kernel`` / ``stride`` / ``pad`` are ints or (h, w) pairs. Output dtype =
input dtype (float32 or float64).

Encodings:
  maxout arg          uint8, index of the winning piece inside its group (0..pieces-1);
                      input channel ``c * pieces + k`` is piece ``k`` of output channel ``c``.
  maxpool arg         int32, flat index ``h * W + w`` into the input plane (H, W).
  maxout_pool arg     int32, ``(piece * H + h) * W + w`` over the pre-maxout group
                      (H, W = the conv output plane, before pooling).
Ties: the first maximum wins (pieces in order; window positions in row-major order).
Pool windows in ceil mode are clipped at the border; pooling never pads.
"""
from __future__ import annotations

import numpy as np

from . import _API
from .shapes import conv_output_size, pair, pool_output_size

__all__ = list(_API)


# --------------------------------------------------------------------------- im2col
def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def im2col(x, kernel, stride=1, pad=0):
    """x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW); row index c*kh*kw + i*kw + j."""
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xp = _pad(x, ph, pw)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, x_shape, kernel, stride=1, pad=0):
    """Adjoint of im2col: cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W), overlaps summed."""
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    c6 = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += c6[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, ph:ph + h, pw:pw + w])


# --------------------------------------------------------------------------- conv
def conv2d_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation. x (N, C, H, W), w (O, C, kh, kw) -> (N, O, OH, OW);
    b: None, (O,) (tied: one bias per map) or (O, OH, OW) (untied: one per position)."""
    sh, sw = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
    xp = _pad(x, ph, pw)
    y = np.zeros((n, o, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        y += (b.reshape(1, o, 1, 1) if b.ndim == 1 else b[None]).astype(x.dtype)
    return y


def conv2d_backward(dy, x, w, stride=1, pad=0, need_dx=True, untied_bias=False):
    """-> (dx or None, dw (O, C, kh, kw), db): db (O,) = dy summed over N, OH, OW, or with
    ``untied_bias`` db (O, OH, OW) = dy summed over N."""
    sh, sw = pair(stride, "stride")
    ph, pw = pair(pad, "pad")
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    xp = _pad(x, ph, pw)
    dw = np.zeros(w.shape, dtype=x.dtype)
    dxp = np.zeros(xp.shape, dtype=x.dtype) if need_dx else None
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None),
                  slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, xp[sl])
            if need_dx:
                dxp[sl] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    db = dy.sum(axis=(0,) if untied_bias else (0, 2, 3)).astype(x.dtype)
    dx = None
    if need_dx:
        dx = np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + wd])
    return dx, dw, db


# --------------------------------------------------------------------------- maxout
def maxout_forward(x, pieces):
    """x (N, C*pieces, ...) -> (y (N, C, ...), arg uint8 piece index; first max wins)."""
    n, cp = x.shape[:2]
    c = cp // pieces
    g = x.reshape((n, c, pieces) + x.shape[2:])
    arg = np.argmax(g, axis=2).astype(np.uint8)  # argmax returns the first maximum
    y = np.take_along_axis(g, arg[:, :, None].astype(np.intp), axis=2)[:, :, 0]
    return np.ascontiguousarray(y), arg


def maxout_backward(dy, arg, pieces):
    """dy (N, C, ...) -> dx (N, C*pieces, ...): dy routed to the winning piece."""
    n, c = dy.shape[:2]
    rest = dy.shape[2:]
    dx = np.zeros((n, c, pieces) + rest, dtype=dy.dtype)
    for k in range(pieces):
        dx[:, :, k] = np.where(arg == k, dy, 0)
    return dx.reshape((n, c * pieces) + rest)


# --------------------------------------------------------------------------- max pool
def maxpool2d_forward(x, kernel, stride, ceil_mode=True):
    """x (N, C, H, W) -> (y (N, C, OH, OW), arg int32 flat h*W+w). No padding; ceil-mode
    windows are clipped at the border; the first maximum (row-major) wins."""
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(stride, "stride")
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, kh, sh, ceil_mode), pool_output_size(w, kw, sw, ceil_mode)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    for a in range(oh):
        h0, h1 = a * sh, min(a * sh + kh, h)
        for b in range(ow):
            w0, w1 = b * sw, min(b * sw + kw, w)
            win = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            k = np.argmax(win, axis=2)
            y[:, :, a, b] = np.take_along_axis(win, k[:, :, None], axis=2)[:, :, 0]
            ww = w1 - w0
            arg[:, :, a, b] = (h0 + k // ww) * w + (w0 + k % ww)
    return y, arg


def maxpool2d_backward(dy, arg, x_shape):
    """dy (N, C, OH, OW), arg int32 -> dx of x_shape; each dy goes to its argmax (summed
    where windows overlap on the same winner)."""
    n, c, h, w = x_shape
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    rows = np.repeat(np.arange(n * c), dy.shape[2] * dy.shape[3])
    np.add.at(dx, (rows, arg.reshape(-1).astype(np.intp)), dy.reshape(-1))
    return dx.reshape(x_shape)


def maxout_pool_forward(x, pieces, kernel, stride, ceil_mode=True):
    """Fused maxout then max pool: equals maxpool2d_forward(maxout_forward(x)[0]) in value.
    arg int32 = (piece * H + h) * W + w over the group's pre-maxout planes."""
    n, cp, h, w = x.shape
    ym, am = maxout_forward(x, pieces)
    y, ap = maxpool2d_forward(ym, kernel, stride, ceil_mode)
    c = cp // pieces
    piece = np.take_along_axis(am.reshape(n, c, h * w), ap.reshape(n, c, -1).astype(np.intp),
                               axis=2).reshape(ap.shape)
    arg = (piece.astype(np.int32) * h * w + ap).astype(np.int32)
    return y, arg


def maxout_pool_backward(dy, arg, x_shape, pieces):
    """dy (N, C, OH, OW) -> dx of x_shape (N, C*pieces, H, W)."""
    n, cp, h, w = x_shape
    c = cp // pieces
    dx = np.zeros((n * c, pieces * h * w), dtype=dy.dtype)
    rows = np.repeat(np.arange(n * c), dy.shape[2] * dy.shape[3])
    np.add.at(dx, (rows, arg.reshape(-1).astype(np.intp)), dy.reshape(-1))
    return dx.reshape(x_shape)


# --------------------------------------------------------------------------- global avg pool
def global_avg_pool_forward(x):
    """x (N, C, H, W) -> (N, C) mean over H, W."""
    return x.mean(axis=(2, 3), dtype=x.dtype)


def global_avg_pool_backward(dy, x_shape):
    n, c, h, w = x_shape
    g = dy / dy.dtype.type(h * w)
    return np.ascontiguousarray(np.broadcast_to(g[:, :, None, None], x_shape))


# --------------------------------------------------------------------------- batch norm
def _bn_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bn_shape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm. Stats over every axis but 1, biased variance.
    -> (y, mean (C,), invstd (C,) = 1/sqrt(var + eps))."""
    ax, sh = _bn_axes(x), _bn_shape(x)
    dt = x.dtype.type
    mean = x.mean(axis=ax, dtype=x.dtype)
    xc = x - mean.reshape(sh)
    var = (xc * xc).mean(axis=ax, dtype=x.dtype)
    invstd = (dt(1) / np.sqrt(var + dt(eps))).astype(x.dtype)
    y = xc * invstd.reshape(sh) * gamma.astype(x.dtype).reshape(sh) + beta.astype(x.dtype).reshape(sh)
    return y.astype(x.dtype), mean, invstd


def batch_norm_backward(dy, x, gamma, mean, invstd):
    """-> (dx, dgamma (C,), dbeta (C,))."""
    ax, sh = _bn_axes(x), _bn_shape(x)
    m = x.size // x.shape[1]
    xhat = (x - mean.reshape(sh)) * invstd.reshape(sh)
    dbeta = dy.sum(axis=ax, dtype=x.dtype)
    dgamma = (dy * xhat).sum(axis=ax, dtype=x.dtype)
    k = (gamma.astype(x.dtype) * invstd / x.dtype.type(m)).reshape(sh)
    dx = k * (x.dtype.type(m) * dy - dbeta.reshape(sh) - xhat * dgamma.reshape(sh))
    return dx.astype(x.dtype), dgamma, dbeta


def batch_norm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    sh = _bn_shape(x)
    dt = x.dtype
    scale = gamma.astype(dt) / np.sqrt(running_var.astype(dt) + dt.type(eps))
    shift = beta.astype(dt) - running_mean.astype(dt) * scale
    return (x * scale.reshape(sh) + shift.reshape(sh)).astype(dt)


# --------------------------------------------------------------------------- relu / dropout
def relu_forward(x):
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dy, y):
    return dy * (y > 0).astype(dy.dtype)


def dropout_mask(shape, p, seed=None, dtype=np.float32):
    """Inverted-dropout mask: each entry is 0 with probability p, else 1/(1-p).
    ``seed``: an int (deterministic), a numpy Generator (advanced), or None."""
    dtype = np.dtype(dtype)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_mask: p must be in [0, 1], got {p}")
    if p == 0.0:
        return np.ones(shape, dtype=dtype)
    if p == 1.0:
        return np.zeros(shape, dtype=dtype)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # float32 draws: twice as fast as float64 ones, and 2^-24 steps are fine for a probability
    keep = rng.random(shape, dtype=np.float32) >= np.float32(p)
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


# --------------------------------------------------------------------------- optimizer updates
# In place on p and its slots; minifit.optim's formulas. The CPU kernels (kernels/cpu/optim.py)
# do the same arithmetic in one pass, with the max-norm constraint fused.
def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """v <- mu v - lr (g + wd p); p <- p + v (Nesterov: p <- p + mu v - lr (g + wd p));
    v None: p <- p - lr (g + wd p)."""
    if weight_decay:
        g = g + weight_decay * p
    if v is None:
        p -= lr * g
        return p
    v *= momentum
    v -= lr * g
    if nesterov:
        p += momentum * v - lr * g
    else:
        p += v
    return p


def rmsprop_update(p, g, ms, lr, decay, eps):
    """pylearn2's form: ms <- decay ms + (1 - decay) g^2; p <- p - lr g / max(sqrt(ms), eps)."""
    ms *= decay
    ms += (1 - decay) * g * g
    p -= lr * g / np.maximum(np.sqrt(ms), eps)
    return p


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0):
    """m, v moving averages of g and g^2, bias-corrected at step t (1-based)."""
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** t)
    vhat = v / (1 - beta2 ** t)
    p -= lr * mhat / (np.sqrt(vhat) + eps)
    return p


def max_norm_(w, max_norm):
    """In place: every slice w[i] rescaled to L2 norm <= max_norm (norms in float64)."""
    axes = tuple(range(1, w.ndim))
    norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
    scale = np.minimum(1.0, max_norm / np.maximum(norms, 1e-12))
    w *= scale.astype(w.dtype)
    return w
