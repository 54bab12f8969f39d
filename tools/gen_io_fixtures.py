#!/usr/bin/env python3
"""Writes the tiny checkpoint fixtures under tests/fixtures/io/ for tests/test_io.cpp.

Run: /work/venv/ref/bin/python tools/gen_io_fixtures.py
Each *.ckpt/*.pt has a companion *_ref.safetensors holding the same tensors (contiguous, written by the
safetensors package) so the C++ reader's values can be compared with what torch.save wrote.
"""
import os
import pickle
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "io")


def ref(name, tensors):
    """Reference values: bool -> uint8, float64 -> float32 (as the C++ reader converts them)."""
    conv = {}
    for k, t in tensors.items():
        t = t.detach()
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        if t.dtype == torch.float64:
            t = t.to(torch.float32)
        conv[k] = t.contiguous().clone()
    save_file(conv, os.path.join(OUT, name), metadata={"format": "pt"})


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    big = torch.randn(4, 6, generator=g)
    sd = OrderedDict()
    sd["model.w_f32"] = torch.randn(3, 5, generator=g)
    sd["model.w_f16"] = torch.randn(2, 3, 4, generator=g).half()
    sd["model.w_bf16"] = torch.randn(7, generator=g).bfloat16()
    sd["model.i64"] = torch.tensor([1, -2, 3, 1 << 40], dtype=torch.int64)
    sd["model.i32"] = torch.tensor([[7, -8], [9, 10]], dtype=torch.int32)
    sd["model.u8"] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    sd["model.bool"] = torch.tensor([True, False, True])
    sd["model.f64"] = torch.randn(3, generator=g, dtype=torch.float64)
    sd["model.scalar"] = torch.tensor(2.5)
    sd["model.empty"] = torch.zeros(0, 3)
    sd["model.transposed"] = big.t()             # non-contiguous view, storage shared with 'big'
    sd["model.rows"] = big[1:3]                  # contiguous view at a storage offset
    sd["model.cols"] = big[:, 2:5]               # strided view at an offset
    sd["model.big"] = big
    sd["model.param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    sd["model.f16_strided"] = torch.randn(4, 4, generator=g).half()[::2, 1::2]
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 100, "name": "tiny"},
               os.path.join(OUT, "nested.ckpt"))
    ref("nested_ref.safetensors", sd)

    # A module's state_dict (OrderedDict with _metadata, BUILD op), saved flat; and under 'model'.
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.GroupNorm(1, 3), torch.nn.Linear(4, 2))
    torch.save(m.state_dict(), os.path.join(OUT, "flat.pt"))
    torch.save({"model": m.state_dict(), "optimizer": {"lr": 0.1}}, os.path.join(OUT, "model_key.pth"))
    ref("flat_ref.safetensors", m.state_dict())

    # Lightning-style: non-tensor extras (numpy scalar/array, a set, optimizer states holding tensors,
    # callback state) around the state_dict; only state_dict's tensors load.
    import numpy as np
    import sys
    import types
    # A stand-in for pytorch_lightning's ModelCheckpoint (PL 1.4, as in sd-v1-4.ckpt, keys callbacks by class).
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        sys.modules[name] = types.ModuleType(name)
    mod = sys.modules["pytorch_lightning.callbacks.model_checkpoint"]
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": mod.__name__})
    mod.ModelCheckpoint = ModelCheckpoint
    torch.save({"epoch": 7, "global_step": np.int64(4200), "pytorch-lightning_version": "1.9.0",
                "state_dict": m.state_dict(),
                "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 1e-4}]}],
                "hyper_parameters": {"lr": np.float64(1e-4), "arr": np.arange(3), "tags": {"a", "b"},
                                     "dtype": torch.float16, "device": torch.device("cpu")},
                "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "dirpath": "/x"},
                              "ModelCheckpoint{'monitor': None}": {"best_model_score": None}}},
               os.path.join(OUT, "lightning.ckpt"))

    # Legacy (pre-1.6) format: must be refused with a clear message.
    torch.save({"w": torch.ones(2)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)

    # Malicious: a pickle that would call os.system when loaded by Python's pickle.
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/easel_pwned",))

    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Evil()}, os.path.join(OUT, "malicious.pt"))

    # Same, but hand-written data.pkl calling builtins.eval via STACK_GLOBAL (protocol 4).
    with zipfile.ZipFile(os.path.join(OUT, "malicious_eval.pt"), "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": Evil2()}, protocol=4))

    # Plain safetensors with f16/bf16/f32/i64 written by the safetensors package.
    st = {"a": torch.randn(2, 3, generator=g), "b": torch.randn(5, generator=g).half(),
          "c": torch.randn(4, 1, generator=g).bfloat16(), "d": torch.arange(3, dtype=torch.int64)}
    save_file(st, os.path.join(OUT, "py.safetensors"), metadata={"author": "gen_io_fixtures"})


class Evil2:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned')",))


if __name__ == "__main__":
    main()
