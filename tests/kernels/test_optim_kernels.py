"""The CPU optimizer kernels (one pass per row, the max-norm constraint fused) against
kernels.reference: update, then max_norm_. The update is the reference's arithmetic in the
parameter's dtype, so it must be bitwise equal; the constraint's scale comes from a float64
norm summed in another order, so it may differ in the last bit of the parameter's dtype."""
import numpy as np
import pytest

from kernels import cpu, reference

SHAPES = [(7,), (5, 3, 3, 3), (96, 48, 8, 8), (500, 4800 // 16), (3, 4, 6, 6)]   # 3rd, 4th: > GRAIN, split


def _case(rng, shape, dtype, nslots):
    p = (rng.standard_normal(shape) * 0.3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    slots = [np.abs(rng.standard_normal(shape)).astype(dtype) * 0.1 for _ in range(nslots)]
    return p, g, slots


def _run(kind, mod, p, g, slots, max_norm, **kw):
    if kind == "sgd":
        args = dict(momentum=0.9, nesterov=kw.get("nesterov", False), weight_decay=kw.get("wd", 0.0))
        if max_norm is None or mod is reference:
            mod.sgd_update(p, g, slots[0] if slots else None, 0.05, **args)
        else:
            mod.sgd_update(p, g, slots[0] if slots else None, 0.05, **args, max_norm=max_norm)
    elif kind == "rmsprop":
        extra = {} if mod is reference or max_norm is None else {"max_norm": max_norm}
        mod.rmsprop_update(p, g, slots[0], 0.01, 0.9, 1e-5, **extra)
    else:
        extra = {} if mod is reference or max_norm is None else {"max_norm": max_norm}
        mod.adam_update(p, g, slots[0], slots[1], 1e-3, 0.9, 0.999, 1e-8, 3, kw.get("wd", 0.0), **extra)
    if mod is reference and max_norm is not None:
        reference.max_norm_(p, max_norm)


CASES = [("sgd", 1, {}), ("sgd", 0, {}), ("sgd", 1, {"nesterov": True, "wd": 1e-3}), ("sgd", 0, {"wd": 1e-2}),
         ("rmsprop", 1, {}), ("adam", 2, {}), ("adam", 2, {"wd": 1e-4})]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,nslots,kw", CASES)
def test_update_without_constraint_is_bitwise_the_reference(kind, nslots, kw, shape, dtype):
    rng = np.random.default_rng(0)
    p, g, slots = _case(rng, shape, dtype, nslots)
    pr, sr = p.copy(), [s.copy() for s in slots]
    _run(kind, cpu, p, g, slots, None, **kw)
    _run(kind, reference, pr, g, sr, None, **kw)
    np.testing.assert_array_equal(p, pr)
    for a, b in zip(slots, sr):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,nslots,kw", CASES)
def test_update_with_max_norm_equals_update_then_constraint(kind, nslots, kw, shape, dtype):
    rng = np.random.default_rng(1)
    p, g, slots = _case(rng, shape, dtype, nslots)
    # a bound between the updated rows' norms: some rows are rescaled, some are left alone
    pu = p.copy()
    _run(kind, reference, pu, g, [s.copy() for s in slots], None, **kw)
    mn = float(np.median(np.sqrt((pu.reshape(shape[0], -1).astype(np.float64) ** 2).sum(axis=1))))
    pr, sr = p.copy(), [s.copy() for s in slots]
    _run(kind, cpu, p, g, slots, mn, **kw)
    _run(kind, reference, pr, g, sr, mn, **kw)
    eps = np.finfo(dtype).eps
    # the scale's float64 norm: summed in another order, off by at most row length x eps64
    # (the classic bound for a sum of positive terms), then rounded to the dtype
    tol = 2 * eps + p.size // shape[0] * np.finfo(np.float64).eps
    np.testing.assert_allclose(p, pr, rtol=tol, atol=0)
    for a, b in zip(slots, sr):
        np.testing.assert_array_equal(a, b)
    norms = np.sqrt((p.reshape(shape[0], -1).astype(np.float64) ** 2).sum(axis=1))
    assert norms.max() <= mn * (1 + 2 * tol)
    if len(shape) > 1:   # (per element for 1-D parameters: then every clipped entry is at the bound)
        assert (norms < mn * (1 - 1e-3)).any() and (np.abs(norms - mn) <= 2 * tol * mn).any()


@pytest.mark.parametrize("shape", SHAPES)
def test_max_norm_alone(shape):
    w = (np.random.default_rng(2).standard_normal(shape) * 0.3).astype(np.float32)
    mn = float(np.median(np.sqrt((w.reshape(shape[0], -1).astype(np.float64) ** 2).sum(axis=1))))
    np.testing.assert_allclose(cpu.max_norm_(w.copy(), mn), reference.max_norm_(w.copy(), mn),
                               rtol=2 * np.finfo(np.float32).eps + w.size // shape[0] * np.finfo(np.float64).eps,
                               atol=0)


def test_non_contiguous_parameter_is_refused():
    p = np.zeros((4, 6), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        cpu.sgd_update(p, np.ones_like(p), None, 0.1)
