"""Writes full-size SD1.5 / SD2.1 / SDXL checkpoints with random weights in the original single-file
layout (LDM for SD1/SD2, sgm for SDXL: what users download), for benchmarks. No hub access needed.

    python tools/make_bench_models.py --family sd15 --dtype f16 --out /work/models/sd15.safetensors
    python tools/make_bench_models.py --family sd21 --dtype f16 --out /work/models/sd21.safetensors
    python tools/make_bench_models.py --family sdxl --dtype f16 --out /work/models/sdxl.safetensors
    python tools/make_bench_models.py --family sdxl_refiner --dtype f16 --out /work/models/sdxl_refiner.safetensors

The key layout comes from tools/fixtures/ldm_keys.py (the same mapping the test fixtures use,
checked there against diffusers' own single-file loader).

SDXL (2.6B-parameter UNet, 10.4 GB in f32) is never built in f32: the models are built on the meta
device, their state dicts mapped to sgm keys (shapes only), and each tensor is drawn and written to the
file one at a time in the target dtype (peak memory: one tensor). Values: weights N(0, 1/fan_in), norm
weights ~1, biases ~0 (N(0, 0.01)), embeddings N(0, 0.02).
"""
import argparse, json, os, struct, sys, zlib

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import ldm_keys  # noqa: E402
from sd_configs import FAMILIES, TEXT_2, VAE, VAES  # noqa: E402

_ST_DTYPE = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}


def fill_random_(name, t, seed):
    """Fills the f32 tensor t (the tensor `name`) in place with random values of a sensible scale."""
    g = torch.Generator().manual_seed((seed * 1000003 + zlib.crc32(name.encode())) & 0x7FFFFFFF)
    t.normal_(generator=g)
    if t.ndim == 1:  # norm weights ~1, biases ~0
        t.mul_(0.02).add_(1) if name.endswith("weight") else t.mul_(0.01)
    elif "embedding" in name:  # token / positional embeddings
        t.mul_(0.02)
    else:  # linear / conv weights (and text_projection [width, proj]): variance 1/fan_in
        t.mul_(t[0].numel() ** -0.5)
    return t


def random_like(name, meta, dt, seed):
    """A random tensor for `name` with meta's shape, drawn in f32 and stored as dt."""
    if not meta.is_floating_point():
        raise ValueError(f"{name}: no random rule for {meta.dtype}")
    return fill_random_(name, torch.empty(meta.shape), seed).to(dt)


def write_streaming(sd, path, dt, seed, metadata):
    """safetensors writer for a dict of meta (shape-only) or real tensors: header first, then each
    tensor drawn (meta) or converted (real) and written in turn."""
    keys = sorted(sd)
    out_dt = {k: (dt if sd[k].is_floating_point() else sd[k].dtype) for k in keys}
    header, off = {"__metadata__": metadata}, 0
    for k in keys:
        n = sd[k].numel() * out_dt[k].itemsize
        header[k] = {"dtype": _ST_DTYPE[out_dt[k]], "shape": list(sd[k].shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for k in keys:
            v = sd[k]
            t = random_like(k, v, dt, seed) if v.is_meta else (v.to(dt) if v.is_floating_point() else v)
            f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)


def sgm_meta_state_dict(family):
    """Shape-only sgm single-file state dict of an SDXL base / refiner (keys: tools/fixtures/ldm_keys.py)."""
    ucfg, tcfg = FAMILIES[family]
    c2 = TEXT_2[family]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**ucfg)
        vae = AutoencoderKL(**VAES[family])
        te1 = CLIPTextModel(CLIPTextConfig(**tcfg)) if tcfg else None
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**c2))
    sd = ldm_keys.unet_to_ldm(unet.state_dict(), unet.config)
    sd.update(ldm_keys.vae_to_ldm(vae.state_dict(), vae.config))
    if te1 is not None:  # base: CLIP-L is embedder 0, bigG embedder 1; refiner: bigG only, embedder 0
        sd.update(ldm_keys.sgm_clip_l(te1.state_dict()))
    sd.update(ldm_keys.sgm_openclip(te2.state_dict(), c2["num_hidden_layers"],
                                    prefix=f"conditioner.embedders.{1 if te1 is not None else 0}.model."))
    return sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=FAMILIES)
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32", "bf16"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    dt = {"f16": torch.float16, "f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    torch.manual_seed(a.seed)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    meta = {"format": "pt", "easel": f"random {a.family} benchmark model"}
    if a.family.startswith("sdxl"):
        sd = sgm_meta_state_dict(a.family)
        write_streaming(sd, a.out, dt, a.seed, meta)
        n = sum(v.numel() for v in sd.values())
        print(f"wrote {a.out}: {len(sd)} tensors, {n / 1e6:.0f}M params, {a.dtype}")
        return
    ucfg, tcfg = FAMILIES[a.family]
    sd = {}
    with torch.no_grad():
        unet = UNet2DConditionModel(**ucfg)
        sd.update(ldm_keys.unet_to_ldm(unet.state_dict(), unet.config))
        del unet
        vae = AutoencoderKL(**VAE)
        sd.update(ldm_keys.vae_to_ldm(vae.state_dict(), vae.config))
        del vae
        if a.family == "sd15":
            te = CLIPTextModel(CLIPTextConfig(**tcfg))
            sd.update(ldm_keys.clip_to_ldm(te.state_dict()))
        else:  # OpenCLIP ViT-H: 24 resblocks (SD2 uses the penultimate) + text_projection
            full = dict(tcfg, num_hidden_layers=tcfg["num_hidden_layers"] + 1)
            te = CLIPTextModel(CLIPTextConfig(**full))
            proj = torch.randn(full["hidden_size"], full["hidden_size"]) * full["hidden_size"] ** -0.5
            sd.update(ldm_keys.clip_to_openclip(te.state_dict(), full["num_hidden_layers"],
                                                {"text_projection": proj}))
        del te
    sd = {k: (v.to(dt) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    save_file(sd, a.out, metadata=meta)
    n = sum(v.numel() for v in sd.values())
    print(f"wrote {a.out}: {len(sd)} tensors, {n / 1e6:.0f}M params, {a.dtype}")


if __name__ == "__main__":
    main()
