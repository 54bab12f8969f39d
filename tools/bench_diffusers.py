"""PyTorch/diffusers CPU timings for the same work as bench/bench_sd.cpp:
one UNet step with CFG (batch 2) at 512x512, a VAE decode, a text encode; FLOPs per step
(torch.utils.flop_counter) and peak RSS. Random full-size weights (no download).

    python tools/bench_diffusers.py --family sd15 --threads 2 --reps 3
"""
import argparse, json, resource, statistics, time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from sd_configs import FAMILIES, VAE


def blas_info():
    """Which BLAS / oneDNN this torch build uses (PyPI wheels bundle MKL and oneDNN)."""
    cfg = torch.__config__.show()
    parts = [l.strip("- ").strip() for l in cfg.splitlines() if "MKL-DNN" in l or "oneDNN" in l]
    parts += [f for f in cfg.replace(",", " ").split() if f.startswith(("BLAS_INFO=", "USE_MKLDNN="))]
    return parts


def timed(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=FAMILIES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ucfg, tcfg = FAMILIES[a.family]
    unet = UNet2DConditionModel(**ucfg).eval()
    vae = AutoencoderKL(**VAE).eval()
    te = CLIPTextModel(CLIPTextConfig(**tcfg)).eval()
    h = a.size // 8
    x = torch.randn(2, 4, h, h)
    ctx = torch.randn(2, 77, ucfg["cross_attention_dim"])
    t = torch.tensor([500, 500])
    z = torch.randn(1, 4, h, h)
    ids = torch.randint(0, 49407, (2, 77))
    res = {"family": a.family, "threads": a.threads, "size": a.size, "torch": torch.__version__,
           "blas": blas_info()}
    with torch.inference_mode():
        from torch.utils.flop_counter import FlopCounterMode
        fc = FlopCounterMode(display=False)
        with fc:
            unet(x, t, ctx)
        res["unet_step_tflop"] = fc.get_total_flops() / 1e12
        fc = FlopCounterMode(display=False)
        with fc:
            vae.decode(z)
        res["vae_decode_tflop"] = fc.get_total_flops() / 1e12
        res["unet_step_s"], res["unet_step_all"] = timed(lambda: unet(x, t, ctx), a.reps)
        res["vae_decode_s"], res["vae_decode_all"] = timed(lambda: vae.decode(z), max(1, a.reps - 1))
        res["text_encode_s"], _ = timed(lambda: te(ids), a.reps)
        if a.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                res["unet_step_bf16_autocast_s"], _ = timed(lambda: unet(x, t, ctx), a.reps)
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(res))
    print(f"{a.family} {a.size}x{a.size} threads={a.threads}: UNet step (batch 2) {res['unet_step_s']:.2f} s "
          f"({res['unet_step_tflop']:.2f} TFLOP), VAE decode {res['vae_decode_s']:.2f} s, "
          f"text encode {res['text_encode_s']*1000:.0f} ms, peak RSS {res['peak_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
