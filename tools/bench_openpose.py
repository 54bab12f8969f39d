"""Reference timings for the OpenPose preprocessors, the same work as bench/bench_openpose.cpp: full-size
bodypose_model / handpose_model / FaceNet with random weights (torch.manual_seed(0), saved as the original .pth
files in --dir), the chelsea photo resized (PIL Lanczos) to SxS, processor resolution S, S = 512 and 1024, through
A1111's pipeline (tools/fixtures/openpose.py a1111_openpose: resize_image_with_pad -> controlnet_aux 0.0.10
OpenposeDetector.detect_poses -> draw_poses -> remove_pad). Also the hand and face estimators alone on a 128x128
crop (the hand runs its network at 4 scales, 184..736 px; the face at 384 px). Median of N runs.

    python tools/bench_openpose.py --dir /tmp/openpose_bench [--reps 3] [--threads 2]
    EASEL_BENCH_OPENPOSE=/tmp/openpose_bench build/bin/bench_openpose
"""
import argparse, os, sys, warnings

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusers import timed  # noqa: E402
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fixtures import openpose as O  # noqa: E402




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parity-only", action="store_true", help="write the models and parity.safetensors, no timing")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    body, hand, face = O.make_nets(0, tiny=False)
    paths = O.save_pth(a.dir, body, hand, face)
    det = O.detector(paths, tiny=False)
    # Parity data for tests/test_openpose.cpp FullSizeParity (run when EASEL_BENCH_OPENPOSE=DIR is set).
    g = torch.Generator().manual_seed(1)
    xs = {k: torch.rand(1, 3, 64, 64, generator=g) - 0.5 for k in ("body", "hand", "face")}
    with torch.no_grad():
        paf, heat = det.body_estimation.model(xs["body"])
        O.save_st(os.path.join(a.dir, "parity.safetensors"), {
            "body_x": xs["body"], "body_paf": paf, "body_heat": heat, "hand_x": xs["hand"],
            "hand_out": det.hand_estimation.model(xs["hand"]), "face_x": xs["face"],
            "face_out": det.face_estimation.model(xs["face"])[-1]})
    if a.parity_only:
        return
    src = Image.open(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "preprocess", "inputs",
                                  "chelsea.png")).convert("RGB")
    crop = np.ascontiguousarray(np.asarray(src.resize((128, 128), Image.LANCZOS))[:, :, ::-1])
    with torch.no_grad():
        print(f"{'hand_estimate 128x128':28s} {timed(lambda: det.hand_estimation(crop), a.reps)[0] * 1e3:9.1f} ms")
        print(f"{'face_estimate 128x128':28s} "
              f"{timed(lambda: det.face_estimation.compute_peaks_from_heatmaps(det.face_estimation(crop)), a.reps)[0] * 1e3:9.1f} ms")
        for s in (512, 1024):
            im = np.asarray(src.resize((s, s), Image.LANCZOS))
            for module in ("openpose", "openpose_full"):
                flags = O.MODULES[module]
                _, js, _ = O.a1111_openpose(det, im, s, *flags)
                ms = timed(lambda: O.a1111_openpose(det, im, s, *flags), a.reps)[0] * 1e3
                print(f"{module + ' ' + str(s) + 'x' + str(s):28s} {ms:9.1f} ms  ({len(js['people'])} people)")


if __name__ == "__main__":
    main()
