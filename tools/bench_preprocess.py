"""Reference timings for the classical ControlNet preprocessors, the same work as bench/bench_preprocess.cpp:
the chelsea photo resized (PIL Lanczos) to SxS, processor resolution S, S = 512 and 1024, median of N runs.
The reference functions are tools/fixtures/preprocess.py's ports of sd-webui-controlnet (cv2 from PyPI);
shuffle is timed with cv2.remap (what A1111 runs), not the fixtures' bit-exact numpy port of OpenCV 4's remap.

    python tools/bench_preprocess.py [--reps 7] [--threads 2]
"""
import argparse, os, sys

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diffusers import timed  # noqa: E402
from fixtures import preprocess as P  # noqa: E402


def shuffle_cv2(img, res, seed):
    img, remove_pad = P.resize_image_with_pad(img, res)
    img = remove_pad(img)
    np.random.seed(seed)
    H, W, _ = img.shape
    x = P.make_noise_disk(H, W, 1, 256) * float(W - 1)
    y = P.make_noise_disk(H, W, 1, 256) * float(H - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


FUNCS = {
    "canny": lambda im, s: P.canny(im, s, 100, 200),
    "blur": lambda im, s: P.blur_gaussian(im, s, 9.0),
    "invert": lambda im, s: P.invert(im),
    "grayscale": lambda im, s: P.grayscale(im, s),
    "gradient": lambda im, s: P.gradient(im, s),
    "threshold": lambda im, s: P.threshold(im, s, 127),
    "scribble_xdog": lambda im, s: P.scribble_xdog(im, s, 32),
    "lineart_standard": lambda im, s: P.lineart_standard(im, s),
    "shuffle": lambda im, s: shuffle_cv2(im, s, 0),
    "color": lambda im, s: P.color(im, s),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cv2.setNumThreads(a.threads)
    src = Image.open(os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "preprocess", "inputs",
                                  "chelsea.png")).convert("RGB")
    for s in (512, 1024):
        im = np.asarray(src.resize((s, s), Image.LANCZOS))
        for name, fn in FUNCS.items():
            t, _ = timed(lambda: fn(im, s), a.reps)
            print(f"{name:18s} {s}x{s}  {t * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
