"""FLOPs of one ControlNet call vs a UNet step (batch 2) for SD1.5 at 512 and SDXL at 1024, counted by
torch.utils.flop_counter on the meta device (no weights, no compute): python tools/controlnet_flops.py (from tools/)."""
import torch, sys
sys.path.insert(0, '.')
from diffusers import UNet2DConditionModel, ControlNetModel
from torch.utils.flop_counter import FlopCounterMode
from sd_configs import FAMILIES
for fam, size in (("sd15", 512), ("sdxl", 1024)):
    ucfg, _ = FAMILIES[fam]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**ucfg)
        cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
        h = size // 8
        x = torch.randn(2, 4, h, h); t = torch.tensor([500, 500]); ctx = torch.randn(2, 77, ucfg["cross_attention_dim"])
        hint = torch.rand(2, 3, size, size)
        kw = {}
        if fam == "sdxl":
            kw = {"added_cond_kwargs": {"text_embeds": torch.randn(2, 1280), "time_ids": torch.randn(2, 6)}}
        with FlopCounterMode(display=False) as fu:
            unet(x, t, ctx, **kw)
        with FlopCounterMode(display=False) as fc:
            cn(x, t, ctx, controlnet_cond=hint, return_dict=False, **kw)
        with FlopCounterMode(display=False) as fh:
            cn.controlnet_cond_embedding(hint)
    U, C, Hh = fu.get_total_flops(), fc.get_total_flops(), fh.get_total_flops()
    print(f"{fam} {size}: UNet {U/1e12:.3f} TFLOP, ControlNet call {C/1e12:.3f} (hint {Hh/1e12:.3f}); share {C/U:.3f}, without hint {(C-Hh)/U:.3f}")
