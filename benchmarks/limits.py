"""What the machine allows, measured in the benchmark's own run: the limits minipegx's figures are read against.

  * the fp32 GEMM rate: [T, M] @ [M, M], [T, M] @ [M, F], [T, F] @ [F, M] products weighted 4 : 1 : 1 as in
    an encoder layer, best of a few rounds, with each library's own BLAS. The encoder's *GEMM limit* is its
    matrix-product FLOPs (minipegx.cost) at that rate: no encoder computing those products can be faster;
  * the read bandwidth a decoding step gets: a matrix-vector product over a 256 MB float32 matrix (what every
    linear layer of a decoding step is), best of a few rounds. A beam step's *memory floor* is the bytes
    it must read (step_bytes) at that rate;
  * the read rate of a decoding step's own products: [R, M] @ [M, O] with R = the beam's rows (4) over the
    decoder's weight shapes and the LM head, the better of x W^T and (W x^T)^T, best of a few rounds. This is not
    a limit of the step but of the BLAS under it: a matrix-vector product streams its matrix at the machine's
    bandwidth, while a product with a few rows runs OpenBLAS's packing GEMM, which reads at a fraction of it.
    A step's bytes at this rate (the *few-row product time*) say how much of its distance from the memory floor
    is the BLAS kernel's and how much is minipegx's;
  * the CPU: model, the instruction sets that decide the kernels (AVX2, AVX-512, AVX512-BF16, AMX), and
    the kernel family NumPy's BLAS picked (threadpoolctl), plus the load average.
"""

from __future__ import annotations

import os
import platform
import time

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info():
    """CPU model, the flags of FLAGS it has, NumPy's BLAS library/version/kernel family, the load average."""
    info = {"cpu": None, "flags": [], "load_average": list(os.getloadavg())}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name") and info["cpu"] is None:
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                info["flags"] = [f for f in FLAGS if f in have]
                break
    except OSError:
        pass
    info["cpu"] = info["cpu"] or platform.processor() or platform.machine()   # no "model name" line on ARM
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                        for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except Exception:  # noqa: BLE001 - only informative
        pass
    info["env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_CORE") or k == "OPENBLAS_L2_SIZE"}
    return info


def gemm_shapes(config, T):
    """The encoder layer's products at T rows and how often each occurs: ((m, k, n), count)."""
    M, F = config["d_model"], config["encoder_ffn_dim"]
    return [((T, M, M), 4), ((T, M, F), 1), ((T, F, M), 1)]


def best_seconds(run, sync, rounds):
    run(), sync()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rate(side, shapes, rounds=4):
    """GFLOP/s of plain fp32 [m, k] @ [k, n] products with this side's own BLAS, weighted by count."""
    flops, seconds, per = 0, 0.0, {}
    for (m, k, n), count in shapes:
        a, b = side.random((m, k)), side.random((k, n))
        best = best_seconds(lambda: a @ b, side.sync, rounds)  # noqa: B023 - used at once
        per[f"{m}x{k}@{k}x{n}"] = 2 * m * k * n / best / 1e9
        flops += 2 * m * k * n * count
        seconds += best * count
    return flops / seconds / 1e9, per


def read_bandwidth(side, nbytes=2**28, cols=768, rounds=4):
    """GB/s a matrix-vector product reads: [rows, cols] @ [cols] over nbytes of float32 (256 MB: several
    times any last-level cache)."""
    w = side.random((nbytes // 4 // cols, cols))
    x = side.random((cols,))
    best = best_seconds(lambda: w @ x, side.sync, rounds)
    return w.shape[0] * w.shape[1] * 4 / best / 1e9


def few_row_read_rate(side, config, rows=4, rounds=3):
    """GB/s of weight read by [rows, I] @ [I, O] products over a decoding step's weight shapes: each decoder
    layer's M x M (self q/k/v/out, cross q/out), F x M and M x F products and the LM head's V x M, weighted by
    their bytes, every weight distinct (so each product reads its weight from memory, as a step does), with the
    better of the two operand orders for each shape."""
    M, F, V = config["d_model"], config["decoder_ffn_dim"], config["vocab_size"]
    shapes = [((M, M), 6), ((F, M), 1), ((M, F), 1), ((V, M), 1)]
    nbytes, seconds = 0, 0.0
    for (o, i), count in shapes:
        copies = max(2, -(-2**27 // (o * i * 4)))          # at least 128 MB in all: more than any cache
        ws, x = [side.random((o, i)) for _ in range(copies)], side.random((rows, i))
        best = min(best_seconds(lambda: [x @ w.T for w in ws], side.sync, rounds),       # noqa: B023 - used at once
                   best_seconds(lambda: [(w @ x.T).T for w in ws], side.sync, rounds))   # noqa: B023
        nbytes += o * i * 4 * count
        seconds += best / copies * count
    return nbytes / seconds / 1e9


def step_bytes(config, T, rows, steps):
    """Bytes a beam-search decoding step must read, on average over `steps` steps, for one input of T tokens
    decoded as `rows` rows (beams): every decoder weight except the cross-attention key/value projections
    (their keys/values are computed once per input), the LM head (the tied embedding, [V, M]), the
    cross-attention keys and values of the input once (shared by the beams), and each row's self-attention
    cache (half of `steps` steps on average). float32."""
    from minipegx.checkpoint.names import expected_shapes
    from minipegx.config import PegasusXConfig

    cfg = PegasusXConfig.from_dict(config)
    count = 0
    for name, dims in expected_shapes(cfg).items():
        once_per_input = "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name
        if name.startswith("model.decoder.") and not once_per_input or name in ("model.shared.weight", "lm_head.weight"):
            n = 1
            for d in dims:
                n *= d
            count += n
    L, M = cfg.decoder_layers, cfg.d_model
    count += L * 2 * T * M                        # cross-attention keys and values, once per input
    count += L * 2 * rows * (steps // 2) * M      # self-attention caches, on average
    return 4 * count
