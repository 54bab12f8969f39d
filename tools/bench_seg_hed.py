"""Timings of the neural preprocessors seg_upernet and softedge_hed against their references, full-size models with
random weights (the same files for both sides):
- UperNet-ConvNeXt-small (openmmlab/upernet-convnext-small's config: ConvNeXt 96-768, depths 3/3/27/3, head 512,
  auxiliary head present): transformers' SegformerImageProcessor + UperNetForSemanticSegmentation +
  post_process_semantic_segmentation + ADE palette (tools/fixtures/seg_hed.py's pipeline). Two processor sizes:
  the default 512x512 (what openmmlab's preprocessor_config.json asks for, whatever the photo), and the processor
  size = S (a preprocessor_config.json with size S, so the network runs at SxS).
- HED (ControlNetHED.pth layout, full widths 64-512): sd-webui-controlnet's hed as ported in tools/fixtures/seg_hed.py
  (resize_image_with_pad, controlnet_aux's ControlNetHED_Apache2, cv2 resizes and sigmoid).
The photo: chelsea resized (PIL Lanczos) to SxS, processor resolution S, S = 512 and 1024; median of N runs after a
warm-up run, torch and cv2 on --threads threads.

    python tools/bench_seg_hed.py --dir /tmp/easel_bench_seg_hed [--reps 3] [--threads 2]
    EASEL_BENCH_SEG_HED=/tmp/easel_bench_seg_hed build/bin/bench_seg_hed   # easel, same files and inputs
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.simplefilter("ignore")
from bench_diffusers import timed  # noqa: E402
from fixtures import seg_hed as S  # noqa: E402
from fixtures.common import save_st, write_json  # noqa: E402


def make_models(d):
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    torch.manual_seed(0)
    bc = ConvNextConfig(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3], layer_scale_init_value=1e-6,
                        out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.3)
    cfg = UperNetConfig(backbone_config=bc, hidden_size=512, pool_scales=[1, 2, 3, 6], num_labels=150,
                        use_auxiliary_head=True, auxiliary_in_channels=384, auxiliary_channels=256)
    m = UperNetForSemanticSegmentation(cfg).eval()
    sd = m.state_dict()
    for size in (512, 1024):
        sub = os.path.join(d, f"upernet{size}")
        os.makedirs(sub, exist_ok=True)
        if size == 512:
            save_st(os.path.join(sub, "model.safetensors"), sd, {"format": "pt"})
            m.config.to_json_file(os.path.join(sub, "config.json"))
        else:
            for f in ("model.safetensors", "config.json"):
                if not os.path.exists(os.path.join(sub, f)):
                    os.symlink(os.path.join("..", "upernet512", f), os.path.join(sub, f))
            write_json(os.path.join(sub, "preprocessor_config.json"),
                       {"image_processor_type": "SegformerImageProcessor", "size": {"height": size, "width": size},
                        "resample": 2})
    net = S.ControlNetHED_Apache2().float().eval()
    torch.save(net.state_dict(), os.path.join(d, "ControlNetHED.pth"))
    return m, net


def seg_ref(m, img, res, size):
    from transformers import SegformerImageProcessor
    img = S.resize_only(img, res)
    proc = SegformerImageProcessor(size={"height": size, "width": size})
    pv = proc(images=Image.fromarray(img), return_tensors="pt").pixel_values
    with torch.no_grad():
        o = m(pixel_values=pv)
    seg = proc.post_process_semantic_segmentation(o, target_sizes=[img.shape[:2]])[0].numpy()
    return S.colorize(seg)


def hed_ref(net, img, res):
    padded, remove_pad = S.resize_image_with_pad(img, res)
    return remove_pad(S.apply_hed(net, padded))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/easel_bench_seg_hed")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--make-only", action="store_true", help="write the models and stop")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    S.cv2.setNumThreads(a.threads)
    os.makedirs(a.dir, exist_ok=True)
    m, net = make_models(a.dir)
    if a.make_only:
        return
    src = Image.open(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "preprocess", "inputs",
                                  "chelsea.png")).convert("RGB")
    for s in (512, 1024):
        im = np.asarray(src.resize((s, s), Image.LANCZOS))
        cases = {"seg_upernet (processor 512)": lambda: seg_ref(m, im, s, 512),
                 f"seg_upernet (processor {s})": lambda: seg_ref(m, im, s, s),
                 "softedge_hed": lambda: hed_ref(net, im, s)}
        for name, fn in cases.items():
            if name.endswith("(processor 512)") is False and name.startswith("seg") and s == 512:
                continue  # same as the default
            t, _ = timed(fn, a.reps)
            print(f"{name:30s} {s}x{s}  {t * 1e3:9.1f} ms", flush=True)


if __name__ == "__main__":
    main()
