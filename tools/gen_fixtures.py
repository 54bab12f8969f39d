#!/usr/bin/env python3
"""Writes easel's reference fixtures under tests/fixtures/ (documented in tests/fixtures/README.md).

Run: /work/venv/ref/bin/python tools/gen_fixtures.py [step ...]
Steps: tokenizer rng schedulers sd1 sd2 sdxl vae_tiling preprocess lora controlnet t2i_adapter seg_hed depth openpose (default: all). Deterministic: fixed seeds, one thread.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixtures import common  # noqa: E402

STEPS = ["tokenizer", "rng", "schedulers", "sd1", "sd2", "sdxl", "vae_tiling", "preprocess", "lora", "vision_ops", "controlnet", "t2i_adapter", "seg_hed", "depth", "openpose"]


def main():
    steps = sys.argv[1:] or STEPS
    common.set_threads()
    for s in steps:
        if s not in STEPS:
            sys.exit(f"unknown step {s}; choose from {STEPS}")
        try:  # imported lazily, so a step whose module is missing does not stop the others
            mod = __import__(f"fixtures.{s}", fromlist=["generate"])
        except ModuleNotFoundError as e:
            if e.name != f"fixtures.{s}":
                raise
            print(f"step {s}: skipped (tools/fixtures/{s}.py does not exist yet)")
            continue
        mod.generate()
    total = 0
    for root, _, files in os.walk(common.FIXTURES):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total size of tests/fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
