"""Writes full-size SD1.5 / SD2.1 checkpoints with random weights in the original LDM
single-file layout (what users download), for benchmarks. No hub access needed.

    python tools/make_bench_models.py --family sd15 --dtype f16 --out /work/models/sd15.safetensors
    python tools/make_bench_models.py --family sd21 --dtype f16 --out /work/models/sd21.safetensors

The key layout comes from tools/fixtures/ldm_keys.py (the same mapping the test fixtures use,
checked there against diffusers' own single-file loader).
"""
import argparse, os, sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import ldm_keys  # noqa: E402
from sd_configs import FAMILIES, VAE  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=FAMILIES)
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32", "bf16"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    dt = {"f16": torch.float16, "f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    torch.manual_seed(a.seed)
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
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(sd, a.out, metadata={"format": "pt", "easel": f"random {a.family} benchmark model"})
    n = sum(v.numel() for v in sd.values())
    print(f"wrote {a.out}: {len(sd)} tensors, {n / 1e6:.0f}M params, {a.dtype}")


if __name__ == "__main__":
    main()
