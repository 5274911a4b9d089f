"""Every tuning threshold of the CPU kernels, each beside the measurement that chose it.

The kernels read these as ``tuning.NAME`` when they run, so a test (or an experiment) can
change one with ``monkeypatch.setattr(tuning, "NAME", value)``; the exception is
POOL_SELECT_MAX_TAPS, which a compiled Numba kernel reads once, at compile time.
Unless said otherwise: batch 128, float32, this project's 2-core AMD EPYC machine
(OpenBLAS sgemm, AVX-512), measured in November 2026.
"""
from __future__ import annotations

# ------------------------------------------------------------------ runtime (runtime.py)
# Below this many elements an elementwise / pooling kernel runs on the calling thread only
# (a thread hand-off costs tens of microseconds). Not measured on its own: a round number
# well above the hand-off cost.
GRAIN = 1 << 16

# glibc hands every freed block above its mmap threshold (adaptive, 128 KB .. 32 MB) back
# to the OS and trims the heap top beyond twice that, so a network's activations (MBs
# each) are mapped and zero-filled afresh on every step. Keeping freed memory in the heap
# lets the next step reuse it. Measured (2026-11-22, batch 128, 2 threads, separate
# processes, two rounds): wrn-10-2 inference 68-72 -> 57-63 ms, training 327-355 ->
# 256-292 ms; fitnet-1 inference 60-62 -> 48-51 ms; peak RSS unchanged (498 / 501 MB).
# Setting only one of the two thresholds did not help (trim alone was slower). One epoch
# of the MNIST teacher / backprop student through the Runner was unchanged (53-57 / 17-19 s
# both ways, peak RSS 285 MB both ways). MINIFIT_MALLOC=system keeps glibc's defaults.
MALLOC_THRESHOLD = 1 << 30

# ------------------------------------------------------------------ dense GEMM (gemm.py)
# Below this many multiply-adds a product runs as one single-threaded GEMM on the caller;
# above, it is split by rows over the pool. Not measured on its own (the split itself was:
# a 128x64 @ 64x2500 product took ~10 ms of CPU with OpenBLAS threading itself, 0.2 ms
# with BLAS at one thread; see gemm.gemm).
GEMM_SPLIT = 1 << 22

# ------------------------------------------------------------------ convolution (conv.py)
# im2col chunk: at most this many elements in one thread's (C*kh*kw, chunk*OH*OW) buffer.
# Forward passes use a quarter of it (1 MB of float32 columns: they stay in L2 between
# im2col and the GEMM; measured 5-8% faster inference on fitnet-1, fitnet-4, mnist-teacher
# and wrn-10-2), backward passes the whole (faster there).
CHUNK_ELEMS = 1 << 20

# Thin layers (few output maps) run their GEMM as rows @ W^T (positions x patch times patch
# x maps): OpenBLAS sgemm is up to 2.4x faster in that orientation when O is small (one
# core, N=1024: O=32, K=288 179 against 93 GFLOP/s; O=16, K=144 151 against 62). With
# im2row and the transpose back, 3x3 layers with O <= 32 gained 10-20%; wider ones, 1x1
# convs and C = 1..3 inputs lost.
ROWS_MAX_O, ROWS_MIN_C = 32, 8

# Evaluation-mode maxout convs (conv2d_maxout_forward with channels_last) take the rows
# orientation and return NHWC up to this many conv maps. Measured (2 threads, batch 128,
# whole inference passes A/B in one process): fitnet-1 0.86x, fitnet-4 0.91x, mnist-teacher
# and mnist-fitnet 0.91x the CNHW path's time; cifar-teacher's 384-map layers (K = 4800 and
# 6144) were 3-9% slower in that orientation, so they keep CNHW.
NHWC_MAX_O = 256

# Forward GEMMs with a long reduction (K = C*kh*kw >= KSPLIT_MIN_K) over few positions
# ran at 113-160 GFLOP/s per core with one sample per chunk (N = OH*OW = 81 .. 225 columns)
# and at 175-181 with ~900 columns (cifar-teacher's 8x8 / 5x5 layers, one core). So
# such layers take chunks of about KSPLIT_COLS columns, and their im2col is cut along
# the input maps into blocks of at most KSPLIT_ELEMS elements (K = 1536, N = 900:
# 181 GFLOP/s) whose products are summed.
KSPLIT_MIN_K, KSPLIT_COLS, KSPLIT_ELEMS = 2048, 1024, 1 << 21
# The same in the rows orientation ((M x K) @ (K x O), one core, O = 96): K = 3073 ran at
# 143 GFLOP/s with M = 81 rows (one 9 x 9 sample) and 163 with 324; K = 1201 at 150 with
# 81 and 191 with 576. Layers with K >= ROWS_LONG_K take chunks of >= ROWS_MIN_M rows
# (buffers up to KSPLIT_ELEMS).
ROWS_LONG_K, ROWS_MIN_M = 1024, 512

# ------------------------------------------------------------------ FFT convolution (conv_fft.py)
# Large kernels (>= 5x5) over many input maps go by FFT. Measured (batch 128, 2 threads,
# maxout + pool fused, im2col vs FFT in one process): cifar-teacher's 8x8 layer (96 -> 384
# maps, 16x16) 453 -> 173 ms, its 5x5 layer 135 -> 118, mnist-teacher's 8x8 layer 28 -> 18;
# whole networks: cifar-teacher inference 0.49x, training step 0.87x; mnist-teacher 0.71x /
# 0.86x. Max error 4-5e-7 of the largest output in float32 (the rounding level of the
# GEMM's sums), no arg changed on these layers. With few input maps or few output
# positions the transforms cost more than they save (mnist-teacher's 5x5 layer, 48 maps,
# 6x6 outputs, prototype: 5.8 ms by im2col vs 7.2 by FFT).
FFT_MIN_TAPS, FFT_MIN_C, FFT_MIN_P = 25, 32, 64
# Samples per transform chunk: bounds the spectra's memory (evaluation passes use batches
# of 500); 128 = the training batch, so a training step is one chunk.
FFT_CHUNK = 128

# ------------------------------------------------------------------ max pool (pool.py)
# Pool windows of up to this many values are scanned with branch-free selects, vectorised
# along an output row; larger ones one window at a time with a branch (then mostly
# predictable: a later value is rarely a new maximum). Each order lost 1.2-1.4x on the
# other's shapes (2 threads, 128 x 96 maps: 2/2 pool of 32 x 32 13.9 vs 14.9 ms, maxout +
# 2/2 pool 7.9 vs 9.5; 4/2 of 10 x 10 2.2 vs 1.6, maxout + 8/1 of 8 x 8 1.3 vs 0.95).
# Read at compile time (a Numba global).
POOL_SELECT_MAX_TAPS = 4

# ------------------------------------------------------------------ Winograd (conv_winograd.py)
# Stride-1 3x3 convs go by Winograd F(2x2, 3x3): the backward (dx and dw) with at least
# WINO_MIN_C input maps, WINO_MIN_O output maps and WINO_MIN_P output positions; the
# forward also needs C * min(OH, OW) >= WINO_FWD_MIN_CW. Measured 2026-12-03, AMD EPYC
# 2 cores shared with other jobs (load 4-6), batch 128, float32, 2 threads, x and dy CNHW,
# process CPU time (benchmarks/ab_winograd.py --clock cpu --repeat 7: the two paths
# alternating, median of 7), Winograd / im2col time, forward (conv2d_maxout_forward, or
# conv2d_forward for the WRN) | backward (conv2d_backward):
#   C x H x W -> O conv maps     fwd   bwd       C x H x W -> O            fwd   bwd
#   32x32x32 -> 64  (fitnet-4)   0.67  0.74      16x32x32 -> 32 (fitnet-1)  0.83  0.73
#   32x32x32 -> 96               0.63  0.68      16x32x32 -> 32, pool 2     0.89  0.69
#   48x32x32 -> 96, pool 2       0.72  0.69      16x16x16 -> 64             1.11  0.73
#   48x16x16 -> 160              0.70  0.70      32x16x16 -> 64             0.86  0.77
#   80x16x16 -> 160              0.62  0.66      32x16x16 -> 64, pool 2     0.92  0.81
#   80x16x16 -> 160, pool 2      0.62  0.68      32x8x8 -> 96               1.06  0.76
#   80x8x8 -> 256                0.73  0.75      48x8x8 -> 96               0.98  0.82
#   128x8x8 -> 256               0.88  0.87      48x8x8 -> 128, pool 8/1    0.96  0.81
#   128x8x8 -> 256, pool 8/1     0.81  0.92      16x24x24 -> 32 (mnist-fitnet) 0.90 0.76
#   16x32x32 -> 32 (wrn-10-2)    0.78  0.72      16x12x12 -> 32 (pad 0)     1.03  0.78
#   32x32x32 -> 32               0.69  0.68      16x4x4 -> 48 (pad 3)       1.17  0.64
#   64x16x16 -> 64               0.66  0.69      12x8x8 -> 48 (pad 0)       1.30  0.82
#   128x8x8 -> 128               0.80  0.79      3x32x32 -> 64 (input)      1.50  1.63
# The backward won on every layer but the 3-map input layer (12 maps and 6x6 outputs
# still 0.82); the forward lost where few maps meet short rows (the transforms vectorise
# along a row of OW/2 tiles; the GEMMs they save shrink with C): C * min(OH, OW) of the
# losers 160-256, of the winners 352 and up (48 maps of 8x8, 384: a tie). WINO_MIN_O and
# WINO_MIN_P are the smallest measured (32 maps, 6x6 outputs); below them no data.
# Whole training steps with these rules, Winograd forced on / off alternating
# (benchmarks/ab_winograd_models.py, batch 128, forward + cross-entropy + backward + SGD
# momentum, median of 7): fitnet-1 0.82x (CPU time) / 0.86-0.89x (wall), fitnet-4 0.75x /
# 0.72-0.75x, wrn-10-2 0.85x / 0.82-0.93x. Peak RSS of 3 steps (--rss): fitnet-4 545 MB
# on, 509 off; fitnet-1 252 / 257 (V is recomputed in the backward, not stored; PyTorch's
# peaks in BENCHMARKS.md: 1197 / 583 MB).
WINO_MIN_C, WINO_MIN_O, WINO_MIN_P = 12, 32, 36
WINO_FWD_MIN_CW = 320
# Evaluation-mode conv2d_maxout_forward (channels_last) also by Winograd (CNHW out) where
# the rule takes the forward, instead of the rows GEMM (NHWC). Whole inference passes
# (benchmarks/ab_winograd_models.py --infer, batch 128, eval mode, no graph, WINO_EVAL on
# / off alternating, median of 9, process CPU time, 2026-12-03, load 4-7): fitnet-4 0.78x,
# fitnet-1 0.95x, mnist-fitnet 1.00x (its forward layers are below WINO_FWD_MIN_CW).
WINO_EVAL = True
# bn_relu_conv2d_forward (the WRN's evaluation-mode convs) by Winograd (BN and ReLU folded
# into the input transform's read, CNHW out, the residual added per chunk) instead of its
# NHWC rows GEMM: wrn-10-2 inference 1.10x (CPU time) / 1.15x (wall) the rows path's
# (--infer --flag WINO_BN_RELU, median of 11): the NHWC rows feed the next block without
# a transpose. Off.
WINO_BN_RELU = False
# Elements of one chunk's V and M (16 (C + O) tiles, float32: 1 MB, the L2 of one core).
# Measured (as above, Winograd forced, 2^16 / 2^17 / 2^18 / 2^19): the same within the
# noise (+-10%) up to 2^18 on every layer; 2^19 was 5-40% slower on the 8x8 layers
# (128x8x8 -> 256: forward 81 / 91 / 89 / 126 ms).
WINO_CHUNK_ELEMS = 1 << 18
# Tile size: F(2x2, 3x3) only. Float32 error on fitnet-1 / fitnet-4 layers with CIFAR-10
# activations (benchmarks/ab_winograd_error.py, max |err| / max |y| against float64):
# F(2x2, 3x3) forward 2.3e-7 .. 5.3e-7 (the im2col path 4.2e-7 .. 1.2e-6: the Winograd sums
# over C are 9x shorter), dx 2.6e-7 .. 1.0e-6 (im2col 1.7e-7 .. 4.6e-7), dw 1.3e-7 ..
# 5.1e-7 (im2col 3.4e-7 .. 6.8e-7); F(4x4, 3x3) (float32 emulation, Lavin & Gray's points
# 0, +-1, +-2, inf) forward 1.3e-6 .. 3.7e-6: 2-4x the im2col path's and up to 1.8x
# eps sqrt(9C) (fitnet-4's 32x32x32 layer), the bound the kernels are tested to. So only
# F(2x2, 3x3) (transform coefficients 0, +-1, +-1/2, exact in binary).
