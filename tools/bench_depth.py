"""Depth preprocessors at full size with random weights: writes the models for bench/bench_depth.cpp, times the
reference on the same files and inputs, and checks easel's guides against the reference's at 512.

Models (random weights with a useful scale, tools/fixtures/depth.py randomize):
- Depth Anything V2 Small (and Base with --base): transformers DepthAnythingForDepthEstimation with the -hf configs
  (hidden 384/768, 12 layers, 6/12 heads, neck [48,96,192,384]/[96,192,384,768], fusion 64/128), saved as a folder
  da_{small,base}_hf/ and in the original layout as depth_anything_v2_vit{s,b}.pth;
- MiDaS DPT-Hybrid: controlnet_aux 0.0.10 DPTDepthModel(backbone="vitb_rn50_384") on timm 1.0.31 (the real
  architecture), saved as dpt_hybrid-midas-501f0c75.pt.
Reference timings: the chelsea photo resized (PIL Lanczos) to SxS, processor resolution S (S = 512, 1024), median of N
runs, 2 threads:
- depth_anything_v2: sd-webui-controlnet's annotator as ported in tools/fixtures/depth.py (resize_image_with_pad,
  DepthAnythingV2Detector) around the transformers model with the original's position-embedding interpolation;
- depth_midas: controlnet_aux MidasDetector (its own 64-multiple resize; the network runs at SxS like easel's).

    python tools/bench_depth.py --dir DIR [--reps 3] [--threads 2] [--base] [--easel build/bin/easel]
    EASEL_BENCH_DEPTH=DIR build/bin/bench_depth
"""
import argparse
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusers import timed  # noqa: E402
from fixtures import depth as D  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def da_model(base):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    C, heads, neck, fusion = (768, 12, [96, 192, 384, 768], 128) if base else (384, 6, [48, 96, 192, 384], 64)
    bc = Dinov2Config(hidden_size=C, num_hidden_layers=12, num_attention_heads=heads, mlp_ratio=4, image_size=518,
                      patch_size=14, out_indices=[3, 6, 9, 12], apply_layernorm=True, reshape_hidden_states=False,
                      layerscale_value=1.0, layer_norm_eps=1e-6)
    cfg = DepthAnythingConfig(backbone_config=bc, neck_hidden_sizes=neck, fusion_hidden_size=fusion,
                              head_hidden_size=32, reassemble_hidden_size=C, patch_size=14)
    m = DepthAnythingForDepthEstimation(cfg).eval()
    D.randomize(m, 11)
    return m


def midas_model():
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
    m = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True).eval()
    D.randomize(m, 12)
    with torch.no_grad():
        m.scratch.output_conv[4].bias.fill_(1.0)
    return m


def write_da(m, d, name, pth):
    from safetensors.torch import load_file
    os.makedirs(os.path.join(d, name), exist_ok=True)
    m.save_pretrained(os.path.join(d, name))
    sd = load_file(os.path.join(d, name, "model.safetensors"))
    torch.save(D.hf_to_orig(sd), os.path.join(d, pth))




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", action="store_true", help="also Depth Anything V2 Base")
    ap.add_argument("--easel", default=os.path.join(ROOT, "build", "bin", "easel"), help="for the 512 parity check")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import cv2
    cv2.setNumThreads(a.threads)
    cv2.ipp.setUseIPP(False)  # as easel's OpenCV (the parity check); the timing difference is negligible here
    os.makedirs(a.dir, exist_ok=True)
    torch.manual_seed(0)
    src = Image.open(D.PHOTO).convert("RGB")
    photos = {s: np.asarray(src.resize((s, s), Image.LANCZOS)) for s in (512, 1024)}

    das = {"small": da_model(False)}
    D.shift_head_bias(das["small"], D.da_input(photos[512]))
    write_da(das["small"], a.dir, "da_small_hf", "depth_anything_v2_vits.pth")
    if a.base:
        das["base"] = da_model(True)
        D.shift_head_bias(das["base"], D.da_input(photos[512]))
        write_da(das["base"], a.dir, "da_base_hf", "depth_anything_v2_vitb.pth")
    md = midas_model()
    torch.save(md.state_dict(), os.path.join(a.dir, "dpt_hybrid-midas-501f0c75.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from controlnet_aux.midas import MidasDetector
        from controlnet_aux.midas.api import MiDaSInference
        det = MidasDetector(MiDaSInference("dpt_hybrid", os.path.join(a.dir, "dpt_hybrid-midas-501f0c75.pt")))

    # Parity at 512 (A1111 pipelines, IPP off) against easel's CLI on the files just written.
    D.RES = 512
    refs = {}
    for k, m in das.items():
        refs[f"depth_anything_v2 {k}"] = (D.da_pipeline(m, photos[512], original=True)[0],
                                          f"depth_anything_v2_vit{k[0]}.pth")
        refs[f"depth_anything_v2 {k} (transformers)"] = (D.da_pipeline(m, photos[512], original=False)[0], f"da_{k}_hf")
    with torch.no_grad():
        refs["depth_midas"] = (D.midas_pipeline(md, photos[512], 0.1)[0], "dpt_hybrid-midas-501f0c75.pt")
    if os.path.exists(a.easel):
        with tempfile.TemporaryDirectory() as tmp:
            Image.fromarray(photos[512]).save(os.path.join(tmp, "in.png"))
            for name, (ref, model) in refs.items():
                out = os.path.join(tmp, "out.png")
                subprocess.run([a.easel, "preprocess", name.split()[0], os.path.join(tmp, "in.png"), "-o", out,
                                "--res", "512", "--model", os.path.join(a.dir, model)], check=True)
                e = np.asarray(Image.open(out).convert("L")).astype(int)
                diff = np.abs(e - ref.astype(int))
                print(f"parity {name:38s} 512: max |diff| {diff.max()}, {(diff > 0).sum()} of {diff.size} pixels differ")

    for s in (512, 1024):
        D.RES = s
        for k, m in das.items():
            t, _ = timed(lambda: D.da_pipeline(m, photos[s], original=True), a.reps)
            print(f"reference depth_anything_v2 ({k}) {s}x{s}: {t * 1e3:9.1f} ms")
        t, _ = timed(lambda: det(photos[s], detect_resolution=s, image_resolution=s), a.reps)
        print(f"reference depth_midas (MidasDetector) {s}x{s}: {t * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
