"""Writes a random kohya-format LoRA for the LoRA benchmarks (bench/bench_lora.cpp): rank r (default 32,
alpha = r/2) on every Linear of the UNet's transformer blocks (attn1/attn2 q/k/v/out, ff, proj_in/proj_out)
and of the text encoder(s), as kohya's trainer targets by default. SD1/SD2 use diffusers-style names
(lora_unet_down_blocks_0_attentions_0_...), SDXL the LDM-style ones (lora_unet_input_blocks_4_1_...), as
kohya writes them. The UNet is built on the meta device, so only the LoRA is ever materialised.

    python tools/make_bench_lora.py --family sd15 --out /tmp/bench/lora_sd15.safetensors
    python tools/make_bench_lora.py --family sdxl --out /tmp/bench/lora_sdxl.safetensors
"""
import argparse
import os
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures import ldm_keys  # noqa: E402
from sd_configs import FAMILIES, TEXT_2  # noqa: E402


def linears(model, want):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and want(n)]


def add_pair(out, key, m, r, g):
    out[key + ".lora_down.weight"] = (torch.randn(r, m.in_features, generator=g) / m.in_features ** 0.5).half()
    out[key + ".lora_up.weight"] = (torch.randn(m.out_features, r, generator=g) * 0.01).half()
    out[key + ".alpha"] = torch.tensor(r / 2).half()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="sd15", choices=["sd15", "sd21", "sdxl"])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    unet_cfg, te_cfg = FAMILIES[a.family]
    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
    xl = a.family == "sdxl"
    for n, m in linears(unet, lambda n: ".transformer_blocks." in n or n.endswith(("proj_in", "proj_out"))):
        if "attentions" not in n:
            continue
        name = ldm_keys.unet_to_ldm({n + ".weight": None}, unet.config, prefix="")
        name = next(iter(name))[:-len(".weight")] if xl else n
        add_pair(out, "lora_unet_" + name.replace(".", "_"), m, a.rank, g)
    tes = [("lora_te1_" if xl else "lora_te_", te_cfg)] + ([("lora_te2_", TEXT_2[a.family])] if xl else [])
    for prefix, cfg in tes:
        with torch.device("meta"):
            te = CLIPTextModel(CLIPTextConfig(**cfg))
        for n, m in linears(te, lambda n: ".layers." in n):
            add_pair(out, prefix + n.replace("text_model.", "").replace(".", "_"), m, a.rank, g)
    save_file(out, a.out, metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(a.rank),
                                    "ss_network_alpha": str(a.rank / 2)})
    print(f"{a.out}: {sum(1 for k in out if k.endswith('alpha'))} modules, "
          f"{os.path.getsize(a.out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
