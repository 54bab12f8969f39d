"""Key names and shapes of REAL-size SD1.5 / SD2.1 original (LDM) single-file checkpoints, for
tests/test_checkpoint.cpp's detection tests (no weights: models are built on the meta device).
LDM names come from tools/fixtures/ldm_keys.py (verified against diffusers' own converters).
Run: /work/venv/ref/bin/python tools/gen_checkpoint_shapes.py  -> tests/data/checkpoint_shapes.json"""
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import ldm_keys  # noqa: E402
from sd_configs import CLIP_L, OPENCLIP_H, SD15_UNET, SD21_UNET, VAE  # noqa: E402


def shapes(sd):
    return {k: list(v.shape) for k, v in sd.items()}


def build(unet_cfg, text_cfg, openclip):
    with torch.device("meta"):
        un = UNet2DConditionModel(**unet_cfg)
        va = AutoencoderKL(**VAE)
        te = CLIPTextModel(CLIPTextConfig(**dict(text_cfg, num_hidden_layers=24 if openclip else 12)))
    sd = {}
    sd.update(ldm_keys.unet_to_ldm(un.state_dict(), un.config))
    sd.update(ldm_keys.vae_to_ldm(va.state_dict(), va.config))
    tsd = te.state_dict()
    if openclip:  # real SD2 files: 24 resblocks, text_projection, logit_scale
        extra = {"text_projection": torch.empty([1024, 1024], device="meta"),
                 "logit_scale": torch.empty([], device="meta")}
        sd.update(ldm_keys.clip_to_openclip(tsd, 24, extra))
    else:
        sd.update(ldm_keys.clip_to_ldm(tsd))
    for k in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod"):
        sd[k] = torch.empty([1000], device="meta")
    return shapes(sd)


out = {"sd15": build(SD15_UNET, CLIP_L, False), "sd21": build(SD21_UNET, OPENCLIP_H, True)}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "checkpoint_shapes.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"), sort_keys=True)
print(path, {k: len(v) for k, v in out.items()})
