"""diffusers CPU timings of one ControlNet on full-size SD1.5 or SDXL (random weights, no download): a UNet step with CFG
(batch 2) at 512x512 alone, and the ControlNet call + the UNet step with its residuals (what
StableDiffusionControlNetPipeline does per step, the hint embedding included), FLOPs of the ControlNet call, peak RSS.
--save-cn writes the random ControlNet (diffusers keys, f16, no config: easel derives it from the shapes).

    python tools/bench_controlnet.py --threads 2 --reps 2 --save-cn /tmp/bench/cn15.safetensors
    python tools/bench_controlnet.py --family sdxl --size 1024 --reps 1 --no-flops --save-cn /tmp/bench/cnxl.safetensors
SDXL: a full ControlNet (ControlNetModel.from_unet on the SDXL base config: encoder copy, added conditioning).
"""
import argparse, json, statistics, time

import torch
from diffusers import ControlNetModel

from bench_diffusers import flops, random_unet, rss_gib, timed
from make_bench_models import fill_random_
from sd_configs import FAMILIES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--save-cn", default="")
    ap.add_argument("--only-save", action="store_true")
    ap.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP counting passes (slow at SDXL size)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ucfg, _ = FAMILIES[a.family]
    unet = random_unet(ucfg)
    cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False).eval()
    with torch.no_grad():  # every weight random (the zero convs too), the bench models' value rules
        for i, (name, p) in enumerate(cn.named_parameters()):
            fill_random_("controlnet." + name, p, 7000 + i)
    if a.save_cn:
        from safetensors.torch import save_file
        save_file({k: v.half().contiguous() for k, v in cn.state_dict().items()}, a.save_cn)
        if a.only_save:
            return
    h = a.size // 8
    x = torch.randn(2, 4, h, h)
    t = torch.tensor([500, 500])
    ctx = torch.randn(2, 77, ucfg["cross_attention_dim"])
    hint = torch.rand(2, 3, a.size, a.size)
    kw = {}
    if a.family == "sdxl":  # pooled text embeds [2, 1280] and time ids [2, 6] (size, crop, size)
        ids = torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]] * 2, dtype=torch.float32)
        kw = {"added_cond_kwargs": {"text_embeds": torch.randn(2, 1280), "time_ids": ids}}
    res = {"family": a.family, "threads": a.threads, "size": a.size, "torch": torch.__version__}
    with torch.inference_mode():
        plain = lambda: unet(x, t, ctx, **kw)  # noqa: E731

        def with_cn():
            down, mid = cn(x, t, ctx, controlnet_cond=hint, conditioning_scale=1.0, return_dict=False, **kw)
            return unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid, **kw)

        plain()
        res["peak_rss_unet_gib"] = rss_gib()
        with_cn()
        res["peak_rss_cn_gib"] = rss_gib()
        p, c = [], []
        for _ in range(a.reps):  # alternated, so both see the same machine load
            p.append(timed(plain, 1, warm=False)[0])
            c.append(timed(with_cn, 1, warm=False)[0])
        res["unet_step_s"], res["unet_step_all"] = statistics.median(p), p
        res["cn_unet_step_s"], res["cn_unet_step_all"] = statistics.median(c), c
        res["cn_overhead_min"] = min(c) / min(p) - 1
        if not a.no_flops:
            res["cn_call_tflop"] = flops(lambda: cn(x, t, ctx, controlnet_cond=hint, return_dict=False, **kw))
            res["unet_step_tflop"] = flops(plain)
    res["cn_overhead_median"] = res["cn_unet_step_s"] / res["unet_step_s"] - 1
    print(json.dumps(res))


if __name__ == "__main__":
    main()
