"""PyTorch/diffusers CPU timings for the same work as bench/bench_sd.cpp:
one UNet step with CFG (batch 2) at 512x512, a VAE decode, a text encode; FLOPs per step
(torch.utils.flop_counter) and peak RSS. Random full-size weights (no download).

    python tools/bench_diffusers.py --family sd15 --threads 2 --reps 3
    python tools/bench_diffusers.py --family sdxl --size 1024 --threads 2 --reps 1

SDXL (--family sdxl / sdxl_refiner) runs the parts one after another, each built, measured and freed
before the next (the fp32 UNet alone is 10.3 GB): text encoders (CLIP-L hidden_states[-2] and bigG with
projection, as StableDiffusionXLPipeline.encode_prompt), VAE decode, then the UNet step with
added_cond_kwargs (text_embeds [2, 1280], time_ids [2, 6] base / [2, 5] refiner). The FLOP-counting pass
doubles as the warm-up there (one full-size step takes about a minute). Peak RSS is given after each part.
"""
import argparse, json, resource, statistics, time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sd_configs import FAMILIES, TEXT_2, VAE, VAES


def blas_info():
    """Which BLAS / oneDNN this torch build uses (PyPI wheels bundle MKL and oneDNN)."""
    cfg = torch.__config__.show()
    parts = [l.strip("- ").strip() for l in cfg.splitlines() if "MKL-DNN" in l or "oneDNN" in l]
    parts += [f for f in cfg.replace(",", " ").split() if f.startswith(("BLAS_INFO=", "USE_MKLDNN="))]
    return parts


def timed(fn, reps, warm=True):
    if warm:
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    with fc:
        fn()
    return fc.get_total_flops() / 1e12


def random_unet(cfg):
    """Full-size UNet with random fp32 weights, built on the meta device and filled in place
    (same value rules as tools/make_bench_models.py; much faster than the default init)."""
    from make_bench_models import fill_random_
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    assert not list(unet.named_buffers())
    unet = unet.to_empty(device="cpu")
    with torch.no_grad():
        for i, (name, p) in enumerate(unet.named_parameters()):
            fill_random_(name, p, i)
    return unet.eval()


def run_sdxl(a, res):
    ucfg, tcfg = FAMILIES[a.family]
    h = a.size // 8
    ids = torch.randint(0, 49407, (2, 77))
    parts = a.parts.split(",")
    with torch.inference_mode():
        if "text" in parts:
            # text: both encoders as encode_prompt (penultimate hidden states; pooled + projection from bigG)
            te1 = CLIPTextModel(CLIPTextConfig(**tcfg)).eval() if tcfg else None
            te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_2[a.family])).eval()

            def encode():
                hs = []
                if te1 is not None:
                    hs.append(te1(ids, output_hidden_states=True).hidden_states[-2])
                o = te2(ids, output_hidden_states=True)
                hs.append(o.hidden_states[-2])
                return torch.cat(hs, -1), o.text_embeds

            ctx, pooled = encode()
            res["text_encode_s"], _ = timed(encode, a.reps + 2)
            if te1 is not None:
                res["text_encode_1_s"], _ = timed(lambda: te1(ids, output_hidden_states=True), a.reps + 2)
            res["text_encode_2_s"], _ = timed(lambda: te2(ids, output_hidden_states=True), a.reps + 2)
            res["text_tflop"] = flops(encode)
            res["peak_rss_text_gib"] = rss_gib()
            del te1, te2
        if "vae" in parts:
            # VAE decode
            vae = AutoencoderKL(**VAES[a.family]).eval()
            z = torch.randn(1, 4, h, h)
            res["vae_decode_tflop"] = flops(lambda: vae.decode(z))
            res["vae_decode_s"], res["vae_decode_all"] = timed(lambda: vae.decode(z), a.reps, warm=False)
            res["peak_rss_vae_gib"] = rss_gib()
            del vae
        if "unet" in parts:
            # UNet step with CFG (batch 2) and the added conditioning
            t0 = time.perf_counter()
            unet = random_unet(ucfg)
            res["unet_build_s"] = time.perf_counter() - t0
            x = torch.randn(2, 4, h, h)
            t = torch.tensor([500, 500])
            ctx = torch.randn(2, 77, ucfg["cross_attention_dim"])
            n_ids = (ucfg["projection_class_embeddings_input_dim"] - TEXT_2[a.family]["projection_dim"]) // 256
            tid = [a.size, a.size, 0, 0, a.size, a.size] if n_ids == 6 else [a.size, a.size, 0, 0, 6.0]
            cond = {"text_embeds": torch.randn(2, TEXT_2[a.family]["projection_dim"]),
                    "time_ids": torch.tensor([tid, tid], dtype=torch.float32)}
            step = lambda: unet(x, t, ctx, added_cond_kwargs=cond)  # noqa: E731
            t0 = time.perf_counter()
            res["unet_step_tflop"] = flops(step)  # also the warm-up
            res["unet_flop_pass_s"] = time.perf_counter() - t0
            res["unet_step_s"], res["unet_step_all"] = timed(step, a.reps, warm=False)
            res["peak_rss_unet_gib"] = rss_gib()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=FAMILIES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    ap.add_argument("--parts", default="text,vae,unet", help="SDXL: which parts to run (comma-separated)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    res = {"family": a.family, "threads": a.threads, "size": a.size, "torch": torch.__version__,
           "blas": blas_info()}
    if a.family.startswith("sdxl"):
        run_sdxl(a, res)
        res["peak_rss_gib"] = rss_gib()
        print(json.dumps(res))
        g = lambda k, m=1: f"{res[k] * m:.2f}" if k in res else "-"  # noqa: E731
        print(f"{a.family} {a.size}x{a.size} threads={a.threads}: UNet step (batch 2) {g('unet_step_s')} s "
              f"({g('unet_step_tflop')} TFLOP), VAE decode {g('vae_decode_s')} s ({g('vae_decode_tflop')} TFLOP), "
              f"text encode {g('text_encode_s', 1000)} ms, peak RSS after text {g('peak_rss_text_gib')} / "
              f"VAE {g('peak_rss_vae_gib')} / UNet {g('peak_rss_unet_gib')} GiB")
        return
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
