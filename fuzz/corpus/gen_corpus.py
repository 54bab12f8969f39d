"""Seed corpora for the fuzz targets: small valid inputs (and a few refusals).

Run: /work/venv/ref/bin/python fuzz/corpus/gen_corpus.py   (rewrites fuzz/corpus/fuzz_*/)
"""
import collections
import io
import json
import os
import struct
import zipfile

import torch
from safetensors.torch import save as st_save

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)


def write(sub, name, data):
    d = os.path.join(HERE, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def raw_safetensors(header, data, pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-(len(h) + 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


# --- safetensors -------------------------------------------------------------------------------
S = "fuzz_safetensors"
write(S, "dtypes.safetensors", st_save({
    "a.f32": torch.randn(2, 3),
    "b.f16": torch.randn(4).half(),
    "c.bf16": torch.randn(2, 2).bfloat16(),
    "d.i64": torch.arange(3),
    "e.i32": torch.arange(2, dtype=torch.int32),
    "f.u8": torch.arange(5, dtype=torch.uint8),
}, metadata={"format": "pt", "note": "seed"}))
write(S, "edge_shapes.safetensors", st_save({"empty": torch.zeros(0, 3), "scalar": torch.tensor(1.5)}))
# Unpadded header: data section not aligned, the reader must copy.
write(S, "unaligned.safetensors",
      raw_safetensors({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "__metadata__": {"k": "v"}}, struct.pack("<2f", 1.0, -2.0), pad=False))
write(S, "shared_bytes.safetensors",
      raw_safetensors({"x": {"dtype": "F16", "shape": [1, 2], "data_offsets": [0, 4]},
                       "y": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\x00\x3c\x00\xc0"))

# --- torch pickles and zips ----------------------------------------------------------------------
P = "fuzz_pickle"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def sd_small():
    base = torch.randn(3, 4)
    sd = collections.OrderedDict()
    sd["w"] = torch.randn(2, 2)
    sd["t"] = base.t()                       # non-contiguous view
    sd["s"] = base[1:, 1:3]                  # storage offset + strides
    sd["h"] = torch.randn(3).half()
    sd["b"] = torch.randn(2).bfloat16()
    sd["i"] = torch.arange(4)
    sd["d"] = torch.randn(2, dtype=torch.float64)
    sd["p"] = torch.nn.Parameter(torch.ones(2))
    sd["z"] = torch.zeros(0)
    return sd


def zip_bytes(obj, protocol=2):
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=protocol)
    return buf.getvalue()


def pickle_of(zbytes):
    z = zipfile.ZipFile(io.BytesIO(zbytes))
    return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


nested = {"state_dict": sd_small(), "epoch": 3, "name": "x", "lr": 1.5e-4, "flag": True, "none": None,
          "blob": b"\x00\x01", "list": [1, 2.0, "three"], "big": 2**40, "neg": -5}
write(P, "p2_nested.pkl", pickle_of(zip_bytes(nested, 2)))
write(P, "p4_nested.pkl", pickle_of(zip_bytes(nested, 4)))
write(P, "p2_module_sd.pkl", pickle_of(zip_bytes(torch.nn.Linear(2, 2).state_dict(), 2)))
write(P, "p5_model.pkl", pickle_of(zip_bytes({"model": {"x.weight": torch.randn(2)}}, 5)))
write(P, "evil.pkl", pickle_of(zip_bytes({"a": Evil()}, 2)))
buf = io.BytesIO()
torch.save({"a": torch.randn(2)}, buf, _use_new_zipfile_serialization=False)
write(P, "legacy.pt", buf.getvalue())
write(P, "tiny.ckpt", zip_bytes({"a": torch.randn(2), "b": torch.arange(3).half()}, 2))

# The same archive re-zipped with deflate: storages read through libzip, not viewed in place.
tiny = zipfile.ZipFile(io.BytesIO(zip_bytes({"a": torch.randn(2), "b": torch.arange(3).half()}, 2)))
out = io.BytesIO()
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for n in tiny.namelist():
        z.writestr(n, tiny.read(n))
write(P, "tiny_deflated.ckpt", out.getvalue())

# Regression: a strided view whose extent (size-1)*stride wraps 64 bits, so a naive bounds check
# passes and the gather reads far past the storage (found in review, fixed in pickle.cpp).
def binunicode(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def long1(v):
    b = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def one_tensor_pickle(size, stride, numel):
    return (b"\x80\x02}(" + binunicode("w") + b"ctorch._utils\n_rebuild_tensor_v2\n((" + binunicode("storage")
            + b"ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") + long1(numel) + b"tQK\x00"
            + long1(size) + b"\x85" + long1(stride) + b"\x85\x89Nt" + b"Ru.")


write(P, "regress_stride_wrap.pkl", one_tensor_pickle(2**24 + 1, 2**40, 2**18))
print("corpus written under", HERE)
