#!/usr/bin/env python3
"""Reference values for easel's "philox" RNG (tests/fixtures/rng/ref_philox.json).

A small numpy port of A1111's modules/rng_philox.py (torch CUDA randn imitation):
Philox4x32-10 with counter (offset, 0, element index, 0) and key = 64-bit seed, Box-Muller on the
first two output words, computed in float64 (numpy promotes uint32 * float32 to float64) and
rounded to float32. Each randn call on a generator bumps the offset by one.

Usage: /work/venv/ref/bin/python tools/gen_philox_ref.py [out.json]
"""
import json
import sys

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
INV = np.float32(2.3283064e-10)
INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


def philox(offset, n, seed):
    c0 = np.full(n, offset, dtype=np.uint64)
    c1 = np.zeros(n, dtype=np.uint64)
    c2 = np.arange(n, dtype=np.uint64)
    c3 = np.zeros(n, dtype=np.uint64)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    mask = np.uint64(0xFFFFFFFF)
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0 = c0 * np.uint64(M0)  # < 2^64: exact in uint64
        p1 = c2 * np.uint64(M1)
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & mask,
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & mask)
    return c0.astype(np.uint32), c1.astype(np.uint32)


def randn(seed, offset, n):
    x, y = philox(offset, n, seed)
    u = x.astype(np.float64) * np.float64(INV) + np.float64(INV / np.float32(2))
    v = y.astype(np.float64) * np.float64(INV_2PI) + np.float64(INV_2PI / np.float32(2))
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/rng/ref_philox.json"
    cases = []
    # (seed, sizes of successive randn calls on one generator)
    for seed, sizes in [(0, [12]), (1, [64, 5]), (42, [1, 300]), (123456789, [32, 32, 7]),
                        (2**32 + 5, [40]), (2**64 - 1, [9, 100])]:
        calls = [randn(seed, i, n).tolist() for i, n in enumerate(sizes)]
        cases.append({"seed": str(seed), "sizes": sizes, "values": calls})
    with open(out, "w") as f:
        json.dump({"generator": "tools/gen_philox_ref.py", "cases": cases}, f)
    print("wrote", out)


if __name__ == "__main__":
    main()
