"""minifit.weights: safetensors / npz in and out, the errors a user meets with a bad file,
and the PyTorch-trained MNIST teacher of ../shared/teachers loaded through a rename table
and checked against an independent NumPy forward written here from the spec."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import minifit.models as M
from minifit import weights
from minifit.cli import main
from minifit.weights import WeightsError

safetensors = pytest.importorskip("safetensors", reason="the [weights] extra (safetensors) is not installed")

TEACHER = Path(__file__).resolve().parents[1].parent / "shared" / "teachers" / "mnist-teacher-pytorch.safetensors"
RENAME = {"layers.1.conv.weight": "h0.weight", "layers.1.b": "h0.bias",
          "layers.3.conv.weight": "h1.weight", "layers.3.b": "h1.bias",
          "layers.5.conv.weight": "h2.weight", "layers.5.b": "h2.bias",
          "layers.7.1.weight": "y.weight", "layers.7.1.bias": "y.bias"}


def some_state(rng):
    return {"h0.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
            "h0.bias": rng.standard_normal((4, 5, 5)).astype(np.float32),
            "count": np.arange(3, dtype=np.int64), "flag": np.array([True, False])}


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_is_exact(tmp_path, rng, suffix):
    state = some_state(rng)
    path = tmp_path / f"w{suffix}"
    weights.write(path, state, metadata={"model": "tiny", "epoch": 3})
    back = weights.read(path)
    assert sorted(back) == sorted(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape
        np.testing.assert_array_equal(back[k], state[k])
    rows, meta = weights.describe(path)
    assert meta == {"model": "tiny", "epoch": "3"}
    assert [r[0] for r in rows] == sorted(state) and dict((r[0], r[1]) for r in rows)["h0.bias"] == (4, 5, 5)
    renamed = weights.read(path, rename={"h0.weight": "conv.w"})
    assert "conv.w" in renamed and "h0.weight" not in renamed and "h0.bias" in renamed


def test_model_round_trip_through_safetensors(tmp_path):
    a, b = M.build("mnist-fitnet", bias="untied"), M.build("mnist-fitnet", bias="untied")
    b.h0.weight.data[...] = 0
    weights.write(tmp_path / "s.safetensors", a.state_dict())
    weights.load(b, tmp_path / "s.safetensors")
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_bad_files_are_named(tmp_path, rng):
    good = tmp_path / "good.safetensors"
    weights.write(good, some_state(rng))
    size = good.stat().st_size
    # truncated inside the data: the tensor that is cut is named
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:size - 10])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: truncated .*tensor '.*' ends at byte"):
        weights.read(cut)
    # truncated inside the header / nearly empty / not JSON
    for keep in (5, 30):
        bad = tmp_path / f"head{keep}.safetensors"
        bad.write_bytes(good.read_bytes()[:keep])
        with pytest.raises(WeightsError, match=rf"head{keep}\.safetensors: (corrupt or truncated|truncated)"):
            weights.read(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 6) + b"{nope}" + b"\0" * 8)
    with pytest.raises(WeightsError, match="junk.safetensors: corrupt safetensors header"):
        weights.read(junk)
    # bfloat16: said, with how to convert
    header = {"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    bf = tmp_path / "bf16.safetensors"
    bf.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(WeightsError, match=r"bf16\.safetensors: tensor 'w' is bfloat16, which NumPy cannot hold.*"
                                           r"v\.float\(\)"):
        weights.read(bf)
    # npz: truncated zip
    npz = tmp_path / "w.npz"
    weights.write(npz, some_state(rng))
    npz.write_bytes(npz.read_bytes()[:200])
    with pytest.raises(WeightsError, match=r"w\.npz: truncated or corrupt"):
        weights.read(npz)
    with pytest.raises(WeightsError, match="does not exist"):
        weights.read(tmp_path / "none.safetensors")
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format '.pt'"):
        weights.read(pt)
    with pytest.raises(WeightsError, match=r"rename names 'layers\.9\.weight', not in the file"):
        weights.read(good, rename={"layers.9.weight": "h9.weight"})


def test_load_errors_name_the_file_and_the_tensor(tmp_path):
    net = M.build("mnist-fitnet", bias="untied")
    state = net.state_dict()
    path = tmp_path / "s.safetensors"
    wrong = dict(state, **{"h0.bias": np.zeros(32, np.float32)})    # a tied bias for an untied layer
    weights.write(path, wrong)
    with pytest.raises(WeightsError, match=r"s\.safetensors: .*h0\.bias has shape \(32, 24, 24\) in the model but "
                                           r"\(32,\) in the state"):
        weights.load(net, path)
    missing = {k: v for k, v in state.items() if k != "y.bias"}
    missing["extra.weight"] = np.zeros(3, np.float32)
    weights.write(path, missing)
    with pytest.raises(WeightsError, match=r"s\.safetensors: .*missing \['y\.bias'\], unexpected \['extra\.weight'\]"):
        weights.load(net, path)


def _spec_forward(state, x):
    """The MNIST maxout teacher from the spec, in plain NumPy (no minifit kernels): zero-pad,
    cross-correlate, add the untied bias, max over each group of consecutive pieces, max-pool
    in ceil mode (a last partial window counts), then the softmax layer's logits."""
    def conv(h, w, b, pad):
        h = np.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        kh, kw = w.shape[2:]
        win = np.lib.stride_tricks.sliding_window_view(h, (kh, kw), axis=(2, 3))   # (N, C, OH, OW, kh, kw)
        return np.einsum("ncijkl,ockl->noij", win, w, optimize=True) + b[None]

    def maxout(z, pieces):
        n, c, hh, ww = z.shape
        return z.reshape(n, c // pieces, pieces, hh, ww).max(axis=2)

    def pool(z, k, s):
        n, c, hh, ww = z.shape
        out = [int(np.ceil((size - k) / s)) + 1 for size in (hh, ww)]
        padded = np.full((n, c, (out[0] - 1) * s + k, (out[1] - 1) * s + k), -np.inf)
        padded[:, :, :hh, :ww] = z
        return np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))

    h = x.astype(np.float64)
    for layer, pad, pieces, k, s in ((1, 0, 2, 4, 2), (3, 3, 2, 4, 2), (5, 3, 4, 2, 2)):
        z = conv(h, state[f"layers.{layer}.conv.weight"].astype(np.float64), state[f"layers.{layer}.b"], pad)
        h = pool(maxout(z, pieces), k, s)
    return h.reshape(len(h), -1) @ state["layers.7.1.weight"].T.astype(np.float64) + state["layers.7.1.bias"]


@pytest.fixture(scope="module")
def shared_teacher():
    if not TEACHER.exists():
        pytest.skip(f"the shared PyTorch teacher is not at {TEACHER}")
    return TEACHER


def test_pytorch_teacher_equals_an_independent_forward(shared_teacher, data_root):
    from minifit.data.loaders import load
    from minifit.distill.methods import error_rate, predict
    from minifit.distill.splits import Split
    net = weights.load(M.build("mnist-teacher", bias="untied"), shared_teacher, RENAME)
    test = load("mnist", "test", data_root)
    x = test.images[:300].astype(np.float32) / 255
    ours = predict(net, x)
    want = _spec_forward(weights.read(shared_teacher), x)
    assert np.abs(ours - want).max() <= 1e-4 * np.abs(want).max()
    assert (ours.argmax(1) == want.argmax(1)).all()
    # minifit's own evaluation of the whole test set: PyTorch measured 0.61% (shared/teachers/README.md)
    from minifit.data.preprocess import Pipeline, Scale01
    split = Split(test.images, test.labels, 500, Pipeline(Scale01()).fit(test.images[:10]))
    assert error_rate(net, split) == pytest.approx(0.61, abs=0.02)


def test_cli_show_and_export(tmp_path, capsys, shared_teacher):
    assert main(["weights", "show", str(shared_teacher)]) == 0
    out = capsys.readouterr().out
    assert "layers.3.b" in out and "(96, 9, 9)" in out and "float32" in out and "metadata framework: pytorch" in out
    # a checkpoint as the training loop writes it -> safetensors, loadable into a fresh model
    from minifit import checkpoint, optim
    from minifit.distill.methods import _Merged
    net = M.build("mnist-fitnet", bias="untied")
    opt = optim.build("rmsprop", net.parameters(), lr=1e-3)
    checkpoint.save(tmp_path / "best.npz", _Merged({"model": net}), _Merged({"optimizer": opt}), epoch=4)
    assert main(["weights", "export", str(tmp_path / "best.npz"), str(tmp_path / "s.safetensors")]) == 0
    fresh = weights.load(M.build("mnist-fitnet", bias="untied"), tmp_path / "s.safetensors")
    np.testing.assert_array_equal(fresh.h2.bias.data, net.h2.bias.data)
    assert weights.describe(tmp_path / "s.safetensors")[1]["epoch"] == "4"
    # a corrupt file: one line, exit 2
    (tmp_path / "bad.safetensors").write_bytes(b"\x01\x02")
    assert main(["weights", "show", str(tmp_path / "bad.safetensors")]) == 2
    assert "bad.safetensors: truncated" in capsys.readouterr().err
