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

# ------------------------------------------------------------------ dropout mask, engine arithmetic (elementwise.py)
# Masks of at least this many elements per part (twice this for two threads) are drawn by
# the pool's threads, each part from its own advanced copy of the generator (the same
# draws as one thread's). Measured 2026-12-05 (Intel Xeon, 2 cores, medians of 31, the
# reference's one-thread mask against two parts): 2^17 elements 208 / 286 us (the
# hand-off costs ~150 us), 2^18 443 / 424, 2^19 937 / 765, 2^20 2127 / 1260, 2^21 4039 /
# 2397; wrn-10-2's masks (2^20 .. 2^22 elements) 8.1 -> 4.7, 4.1 -> 2.4, 2.0 -> 1.3 ms;
# its whole training step 0.99x / 0.98x of the one-thread mask's (benchmarks/ab_paths.py
# --models wrn-10-2 --b "DROPOUT_SPLIT=1<<40" --kinds train, medians of 15, two runs).
DROPOUT_SPLIT = 1 << 18
# The engine's add / sub / mul / div of two same-shape arrays of at least this many elements
# run in two contiguous halves over the pool (NumPy's ufunc, GIL released). Memory-bound:
# measured 2026-12-07 (Intel Xeon, 2 cores, float32, medians of 41, one half per thread
# against one ufunc call): 2^16 elements 0.039 / 0.019 ms, 2^18 0.145 / 0.106, 2^20 0.46 /
# 0.62, 2^22 2.9 / 5.2. Two 4-D operands in the two canonical layouts (dropout's NCHW mask
# times a CNHW activation, which NumPy ran as one strided single-threaded pass) go by planes
# in a Numba kernel. In wrn-10-2 these are dropout's x * mask and g * mask, the residual adds
# and the gradient sums of a tensor used twice: its engine mul time 17.0 -> 9.0 ms per
# training step, the step 1.02x faster (benchmarks/ab_paths.py --models wrn-10-2 --b
# "EW_SPLIT=1<<62" --kinds train --repeats 21, 2026-12-07, Intel Xeon 2 cores, a noisy
# machine: step 414 / 424 ms); fitnet-4 1.00, mnist-fitnet 1.01.
EW_SPLIT = 1 << 20

# ------------------------------------------------------------------ optimizer updates (optim.py)
# Parameters of at least this many elements are updated by the pool's threads (rows split);
# smaller ones on the calling thread. The update is memory-bound, so two threads barely help,
# and a hand-off costs more than it saves on mid-size tensors. Measured 2026-12-03 (SGD with
# the max-norm constraints, whole networks' parameters, 2 threads, a machine loaded by other
# jobs, medians of 8 interleaved: benchmarks/ab_optim.py --split): cifar-teacher
# 34.0 / 33.7 / 34.7 ms with the split from 64K / 1M / never; fitnet-4 10.4 / 3.2 / 7.6 ms.
# With the split from GRAIN (64K), fitnet-1's and mnist-teacher's steps were 2-3x slower
# than NumPy's multi-pass update on that loaded machine.
OPTIM_SPLIT = 1 << 20

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
# Re-measured 2026-12-03 with the FFT backward in place (AMD EPYC, 2 cores, shared, load
# 4-9; benchmarks/ab_fft.py --forward, conv2d_maxout_forward im2col / FFT alternating,
# medians of 7-15): mnist-teacher h2 (48 maps, 5x5 pad 3 on 4x4, 6x6 outputs) in the
# training layout 0.67-0.72 of im2col's time, but with channels_last (evaluation, where
# the rows GEMM runs) 1.03; whole mnist-teacher training step with FFT_MIN_P 36 against
# 64: 0.93 (medians of 15), inference 1.06 / 1.08 (two runs, medians of 21). So the
# training layout takes outputs from 36 positions (FFT_MIN_P), evaluation passes keep 64
# (FFT_MIN_P_NHWC). The first layers (1 or 3 input maps) still lose: mnist-teacher h0
# 2.8x / 3.7x (training / channels_last), cifar-teacher h0 1.55x / 1.56x; FFT_MIN_C = 32
# stays (no layer measured between 3 and 48 maps). The others: mnist-teacher h1 0.41 /
# 0.43, cifar-teacher h1 0.26 / 0.25, h2 0.61 / 0.49. 16 maps measured since (2026-12-05,
# Intel Xeon 2 cores, benchmarks/ab_paths.py --models mnist-fitnet --b "FFT_MIN_C=16"
# "FFT_BWD_MIN_C=16", medians of 15): mnist-fitnet's 5x5 layer over 16 maps of 10x10 by FFT
# (forward and backward) made its training step 1.07x and its inference 1.12x slower.
FFT_MIN_TAPS, FFT_MIN_C, FFT_MIN_P, FFT_MIN_P_NHWC = 25, 32, 36, 64
# Samples per transform chunk: bounds the spectra's memory (evaluation passes use batches
# of 500); 128 = the training batch, so a training step is one chunk.
FFT_CHUNK = 128
# The backward transforms x and dy in blocks of this many samples (conv_fft._spectra), so
# that only a block's intermediates (contiguous copy, half transform, padded second-stage
# input) exist beside the spectra. Peak RSS of 3 cifar-teacher training steps (fresh
# process each, 2026-12-03): 900 MB in one block, 781 with 16, 832 with 32 (the im2col
# backward: 789). CPU time of the cifar-teacher h1 / h2 backward (process time, medians
# of 11, interleaved): 16 -> 1.01 / 1.00 of one block, 32 -> 1.03 / 1.04.
FFT_BLOCK = 16
# The backward (conv_fft.fft_conv_backward: dx and dw by FFT; db summed from dy), for
# stride 1, kh*kw >= FFT_BWD_MIN_TAPS, min(C, O) >= FFT_BWD_MIN_C, OH*OW >= FFT_BWD_MIN_P.
# Measured 2026-12-03 (AMD EPYC, 2 cores, shared: load average 4-11; batch 128, float32,
# 2 threads, x and dy in CNHW; benchmarks/ab_fft.py [--clock cpu], im2col / FFT
# alternating call by call, medians of 7-9), FFT time / im2col time, both gradients
# (dw only), wall clock | process CPU time:
#   mnist-teacher h1 (48 -> 96 maps, 10x10, 8x8 pad 3)   0.37 (0.51) | 0.38 (0.26)
#   mnist-teacher h2 (48 -> 96, 4x4, 5x5 pad 3, 6x6 out) 0.52 (0.93) | 0.67 (0.65)
#   cifar-teacher h1 (96 -> 384, 16x16, 8x8 pad 3)       0.21 (0.23) | 0.20 (0.23)
#   cifar-teacher h2 (192 -> 384, 7x7, 5x5 pad 3)        0.44 (0.41) | 0.43 (0.46)
#   mnist-teacher h0 (1 -> 96, 28x28, 8x8, dw only)      4.9         | 4.9: left to im2col
#   cifar-teacher h0 (3 -> 192, 32x32, 8x8 pad 4, dw)    1.8         | 1.9: left to im2col
# (cifar-teacher h1 both gradients: 2989 -> 619 ms wall, 3487 -> 703 ms CPU.)
# The first layers lose because the transforms (of dy: O maps) cost ~ (C + O) per
# frequency while the GEMM work saved is ~ C*O*taps: with C = 1 or 3 there is little to
# save. FFT_BWD_MIN_P = 36 is the smallest output measured (mnist-teacher h2); smaller
# ones, kernels under 5x5 and C or O between 3 and 48 were not measured, but for 16 maps
# (see FFT_MIN_C: slower). Whole training steps (ab_fft.py --step, this rule against
# im2col everywhere, alternating, forward as tuned): mnist-teacher 0.61 wall (medians of
# 11) / 0.74 CPU time; cifar-teacher 0.41 wall (medians of 7) / 0.44 CPU time. Peak RSS of 3 training steps in a fresh process
# (--rss): cifar-teacher 782 MB with this rule, 789 with im2col (PyTorch's step: 1238 MB in
# BENCHMARKS.md); mnist-teacher 229 / 226 MB.
FFT_BWD_MIN_TAPS, FFT_BWD_MIN_C, FFT_BWD_MIN_P = 25, 32, 36

# ------------------------------------------------------------------ max pool (pool.py)
# Pool windows of up to this many values are scanned with branch-free selects, vectorised
# along an output row; larger ones one window at a time with a branch (then mostly
# predictable: a later value is rarely a new maximum). Each order lost 1.2-1.4x on the
# other's shapes (2 threads, 128 x 96 maps: 2/2 pool of 32 x 32 13.9 vs 14.9 ms, maxout +
# 2/2 pool 7.9 vs 9.5; 4/2 of 10 x 10 2.2 vs 1.6, maxout + 8/1 of 8 x 8 1.3 vs 0.95).
# Read at compile time (a Numba global).
POOL_SELECT_MAX_TAPS = 4

# ------------------------------------------------------------------ small padded maps (conv_small.py)
# Stride-1 convolutions whose output has at least this many times as many positions as the
# input (OH*OW >= growth * H*W: padding wider than the kernel's reach, small maps) run by
# the transposed formulation (conv_small: GEMMs over the input's positions, then a scatter
# of the taps; the backward gathers dz). Measured 2026-12-03, AMD EPYC 2 cores (shared,
# load 4-6), batch 128, float32, one thread, CPU time of the call, medians of 9 interleaved
# runs, new / old (im2col or im2row GEMMs) per direction, forward = conv2d_forward,
# backward = conv2d_backward with dx:
#   growth 4.00  mnist-fitnet h4   16 -> 48 maps, 4x4, 3x3 pad 3     fwd 0.47-0.52  bwd 0.36-0.42
#   growth 2.25  mnist-teacher h2  48 -> 96 maps, 4x4, 5x5 pad 3     fwd 0.35-0.50  bwd 0.35-0.37
#   growth 1.78  16 -> 32 maps, 6x6, 3x3 pad 2                       fwd 0.64-0.81  bwd 0.56-0.66
#   growth 1.44  mnist-fitnet h2   16 -> 32 maps, 10x10, 5x5 pad 3   fwd 0.99-1.33  bwd 0.78-0.96
#   growth 1.00  32 -> 64 maps, 8x8, 3x3 pad 1                       fwd 1.29-1.70  bwd 1.12-1.24
#   growth 0.81  mnist-teacher h1  48 -> 96 maps, 10x10, 8x8 pad 3   fwd 2.8        bwd 2.3 (2 threads)
#   (ranges: over SMALL_MIN_M = 1..64.) So the forward takes it from growth 1.6 (between
# the even 1.44 and the winning 1.78), the backward from 1.4 (the smallest winning growth
# measured, rounded down; 1.0 loses).
# Whole mnist-fitnet (h2's backward and h4 take the path; benchmarks/ab_small.py --what
# small, 2 threads, 21 interleaved calls): training step 0.90-0.93 (wall and CPU time, three
# runs), inference 0.89-1.07 (noise level; only h4's forward changes).
# Where both this path and the FFT (FFT_MIN_P, FFT_BWD_*) would take a layer (mnist-teacher
# h2: 48 -> 96 maps, 4x4 maps, 5x5 pad 3), this one goes first: whole mnist-teacher A/B
# (benchmarks/ab_paths.py --clock cpu, medians of 11, 2026-12-03, load 2-3), the FFT / im2col
# taking h2 instead: training step 1.13x, inference 1.06x the time.
SMALL_FWD_MIN_GROWTH, SMALL_BWD_MIN_GROWTH = 1.6, 1.4
# Samples per chunk of that path: at least this many (where each thread still gets a
# chunk): the scatter / gather copy runs of one value per sample. mnist-fitnet h2's
# forward with L2-sized chunks (3 samples) took 2.1x the old path's time, with 16 1.0x.
SMALL_MIN_M = 16

# conv2d_maxout_backward always fuses (no threshold): each chunk of dz is made from dy and
# the arg right before its GEMMs instead of by a whole-batch maxout(_pool)_backward first.
# Measured 2026-12-03, AMD EPYC 2 cores (shared, load 4.5-6), batch 128, float32, 2
# threads, process CPU time, medians of 11 interleaved calls, fused / composition, per
# mnist-fitnet layer (h0: no dx): h0 0.88, h1 0.99, h2 0.96, h3 0.92, h4 0.81, h5 0.92;
# the whole mnist-fitnet training step (21 calls) 0.93 (CPU time) and 0.94 (wall). Again
# at load 2.5-3 (benchmarks/ab_small.py --what fused --repeats 21): layer steps h1..h5
# 1.01 0.84 0.93 0.89 0.97 (wall) / 0.95 1.00 0.91 0.97 0.94 (CPU); training step 0.90
# (wall) / 0.97 (CPU), once 1.00 (wall, load < 1); never measurably slower.

# ------------------------------------------------------------------ Winograd (conv_winograd.py)
# Stride-1 3x3 convs go by Winograd F(2x2, 3x3), forward and backward (dx and dw), with at
# least WINO_MIN_C input maps, WINO_MIN_O output maps and WINO_MIN_P output positions.
# (Until 2026-12-07 the forward also needed C * min(OH, OW) >= 320, WINO_FWD_MIN_CW: see
# below.) Measured 2026-12-03, AMD EPYC
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
# Untied biases (O, OH, OW) take the same rule (added after these measurements; the bias
# is added to each chunk's output as on the other paths): the MNIST experiments' mnist-fitnet
# (untied) training step 0.92x with Winograd than without (benchmarks/ab_paths.py --bias
# untied --b "WINO_MIN_C=1<<30" --clock cpu, medians of 11, 2026-12-03, load 2-3); its
# inference 1.04x (noise: mnist-teacher, which has no 3x3 conv, moved 0.93-1.04x in the same run).
# 2026-12-07 (Intel Xeon, 2 cores): the training passes' transforms moved from CNHW rows of
# tiles (V[xi] as (C, T), 16 store streams: scalar loops) to the NHWC-rows form of the
# evaluation passes (V[xi] as (T, C), vectorised along the maps; the forward's output
# transposed per chunk to CNHW in 16x16 tiles, the backward's dU = dM @ V an NN GEMM).
# Per layer, one thread, per 128 samples, the copy + input transform against the CNHW input
# transform (a throwaway script, medians of 15 alternating): 32x32x32 5.4 / 8.7 ms,
# 16x32x32 2.7 / 4.3, 64x16x16 3.5 / 4.8, 128x8x8 1.8 / 2.9, 16x22x22 1.4 / 2.2; the
# forward chunk (transforms, GEMMs, transpose) 1.07-1.53x faster on every layer but
# 64x32x32 (0.98); V + dU in the backward 1.11-1.78x. Whole training steps
# (benchmarks/ab_paths.py --kinds train --repeats 15, the CNHW form behind a flag, medians
# alternating in one process): wrn-10-2 1.05x, fitnet-1 1.11x, mnist-fitnet 1.04x, fitnet-4
# 1.08x faster. With the forward's transforms vectorised, its C * min(OH, OW) >= 320
# condition (few maps of short rows had lost with the scalar transforms) no longer paid:
# dropping it (--b "WINO_FWD_MIN_CW=0") made mnist-fitnet's training step 0.98x (wall; CPU
# clock 0.98x; with untied biases 0.95x) and fitnet-1's 0.99-1.00x the time, so the forward
# takes the backward's rule.
WINO_MIN_C, WINO_MIN_O, WINO_MIN_P = 12, 32, 36
# Evaluation passes (conv2d_maxout_forward with channels_last, bn_relu_conv2d_forward) go
# by the NHWC-rows Winograd (conv_winograd.wino_rows_chunks: transforms vectorised along
# the maps) wherever the backward's shape rule holds, instead of the rows GEMM (im2row,
# rows @ W^T). Measured 2026-12-05 (Intel Xeon, 2 cores, batch 128, A/B in one process,
# medians of 15: benchmarks/ab_paths.py --b "WINO_ROWS=False" --kinds infer), inference
# without / with it, with its chunks at 2^18 / at WINO_ROWS_CHUNK_ELEMS below: fitnet-1
# 1.13 / 1.18, fitnet-4 1.16 / 1.38 (whose 768+ layers went by the CNHW Winograd before:
# this replaced that path and tuning.WINO_EVAL), wrn-10-2 1.26 / 1.21 (BN and ReLU folded
# into the first copy; the CNHW Winograd of these convs had been 1.30x slower than the rows
# GEMM, tuning.WINO_BN_RELU, now gone), mnist-fitnet 1.04 / 1.08, mnist-teacher and
# cifar-teacher (no 3x3 conv) 0.99-1.01. Per layer (conv2d_maxout_forward, 2 threads, medians
# of 21 alternating) it lost only on mnist-fitnet h5 (12 maps of 8x8, 6x6 out, 4 pieces:
# 0.65 / 0.57 ms) and by 1.07-1.08x on fitnet-1 h1 / h3 (16 maps, 32x32 / 16x16), but
# a C * min(OH, OW) threshold of 100 or 300 changed whole inference passes by 0.99-1.02
# (mnist-fitnet, fitnet-1, medians of 21): no threshold.
WINO_ROWS = True
# Its chunks: V and M of up to this many elements (wino_rows_chunks, every forward; the
# backward keeps WINO_CHUNK_ELEMS: 2^20 there made training steps 1.03-1.07x slower,
# ab_paths.py --b "WINO_CHUNK_ELEMS=1<<20" --kinds train, 2026-12-07; the training forward
# at 2^18 instead of 2^20, --b "WINO_ROWS_CHUNK_ELEMS=1<<18": 0.97-1.02x, kept). Bigger
# chunks mean fewer Python-level calls per layer (at 2^18 fitnet-1's
# 16-map layers ran one sample per chunk). Whole inference passes against 2^18 (ab_paths.py,
# medians of 15): 2^19 mnist-fitnet 0.95, fitnet-1 0.92, fitnet-4 1.01, wrn-10-2 1.00; 2^20
# 0.91, 0.92, 1.02, 1.00; against 2^20: 2^21 1.08, 1.16, 0.99, 1.10; 2^22 1.30, 1.26,
# 1.07, 1.18.
WINO_ROWS_CHUNK_ELEMS = 1 << 20
# Elements of one backward chunk's V and M (16 (C + O) tiles, float32: 1 MB, the L2 of one core).
# Measured (as above, Winograd forced, 2^16 / 2^17 / 2^18 / 2^19): the same within the
# noise (+-10%) up to 2^18 on every layer; 2^19 was 5-40% slower on the 8x8 layers
# (128x8x8 -> 256: forward 81 / 91 / 89 / 126 ms).
WINO_CHUNK_ELEMS = 1 << 18
# ... but at least this many tiles per chunk: on 8x8 maps with many maps (16 tiles per
# sample, C + O >= 256) WINO_CHUNK_ELEMS alone leaves 2-4 samples, 32-64 tiles, and the
# per-point GEMMs (O x C) @ (C x T) a short T. Measured per layer 2026-12-07 (Intel Xeon,
# 2 threads, benchmarks/ab_winograd.py --chunk 262144,524288,1048576, medians of 7,
# forward + backward at 2^18 / 2^20): fitnet-4 h11 (80 -> 256 maps, T 48) 1.10x faster,
# h12-15 (128 -> 256, T 32) 1.22x, h16 1.25x, wrn-10-2 g3 conv2 (128 -> 128, T 64) 1.08x,
# while layers already at T >= 80 lost with the larger chunks (fitnet-1 h3-h7 0.80-0.89x,
# wrn-10-2 g1 conv2 0.79x): so a floor on T rather than larger chunks. With the floor at
# 96 against none, same process (2 threads, medians of 11, forward / backward): 128 -> 256
# maps of 8x8 1.18x / 1.24x faster, 80 -> 256 0.98x / 1.09x, 128 -> 128 1.04x / 1.08x,
# 48 -> 128 1.06x / 1.03x, 64 -> 64 of 16x16 (T >= 96 already) 1.03x / 1.01x. Whole
# training steps (benchmarks/ab_paths.py --b "WINO_MIN_TILES=0", medians of 15-21):
# fitnet-4 1.03x and 1.10x faster, fitnet-1 0.99x, wrn-10-2 0.96x / 0.98x on the wall
# clock (a loaded machine) and 1.03x faster on the CPU clock (--clock cpu); inference
# 0.99-1.01x.
WINO_MIN_TILES = 96
# Tile size: F(2x2, 3x3) only. Float32 error on fitnet-1 / fitnet-4 layers with CIFAR-10
# activations (benchmarks/ab_winograd_error.py, max |err| / max |y| against float64):
# F(2x2, 3x3) forward 2.3e-7 .. 5.3e-7 (the im2col path 4.2e-7 .. 1.2e-6: the Winograd sums
# over C are 9x shorter), dx 2.6e-7 .. 1.0e-6 (im2col 1.7e-7 .. 4.6e-7), dw 1.3e-7 ..
# 5.1e-7 (im2col 3.4e-7 .. 6.8e-7); F(4x4, 3x3) (float32 emulation, Lavin & Gray's points
# 0, +-1, +-2, inf) forward 1.3e-6 .. 3.7e-6: 2-4x the im2col path's and up to 1.8x
# eps sqrt(9C) (fitnet-4's 32x32x32 layer), the bound the kernels are tested to. So only
# F(2x2, 3x3) (transform coefficients 0, +-1, +-1/2, exact in binary).
