"""PyTorch/diffusers timings for the same work as bench/bench_t2i.cpp: one T2I-Adapter forward (random full-size
weights: SD1.5 full_adapter at 512, light_adapter at 512, full_adapter_xl at 1024) and one SD1.5 UNet step with CFG
(batch 2, 512x512) without and with down_intrablock_additional_residuals, as StableDiffusionAdapterPipeline runs them.

    python tools/bench_t2i_adapter.py --threads 2 --reps 3
"""
import argparse
import json
import math

import torch
from diffusers import T2IAdapter

from bench_diffusers import random_unet, timed
from sd_configs import FAMILIES

ADAPTERS = {
    "full_adapter": (dict(in_channels=3, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=8,
                          adapter_type="full_adapter"), 512),
    "light_adapter": (dict(in_channels=3, channels=[320, 640, 1280], num_res_blocks=4, downscale_factor=8,
                           adapter_type="light_adapter"), 512),
    "full_adapter_xl": (dict(in_channels=1, channels=[320, 640, 1280, 1280], num_res_blocks=2, downscale_factor=16,
                             adapter_type="full_adapter_xl"), 1024),
}


@torch.no_grad()
def random_adapter(kw):
    a = T2IAdapter(**kw).eval()
    g = torch.Generator().manual_seed(1)
    for _, p in sorted(a.named_parameters()):
        p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim == 1 else 1 / math.sqrt(p[0].numel())))
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-unet", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    res = {"threads": a.threads, "torch": torch.__version__}
    with torch.inference_mode():
        feats = None
        for name, (kw, size) in ADAPTERS.items():
            ad = random_adapter(kw)
            x = (torch.randn(1, kw["in_channels"], size, size) > 0).float()  # an edge map
            res[f"{name}_{size}_ms"] = timed(lambda: ad(x), a.reps)[0] * 1e3
            if name == "full_adapter":
                feats = [torch.cat([f] * 2) for f in ad(x)]  # CFG copies, scale 1
        if not a.no_unet:
            ucfg, _ = FAMILIES["sd15"]
            unet = random_unet(ucfg)
            x = torch.randn(2, 4, 64, 64)
            t = torch.tensor([981, 981])
            ctx = torch.randn(2, 77, ucfg["cross_attention_dim"])
            res["unet_step_s"] = timed(lambda: unet(x, t, ctx), a.reps)[0]
            # the pipeline passes clones each step
            res["unet_step_adapter_s"] = timed(
                lambda: unet(x, t, ctx, down_intrablock_additional_residuals=[f.clone() for f in feats]), a.reps)[0]
            res["adapter_share_20_steps_pct"] = 100 * (res["full_adapter_512_ms"] / 1e3) / (20 * res["unet_step_s"])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
