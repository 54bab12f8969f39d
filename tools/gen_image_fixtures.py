#!/usr/bin/env python3
"""Tiny image fixtures for tests/test_image.cpp, with what PIL (the reference diffusers and
A1111 use) makes of them. Run with the reference venv:

    /work/venv/ref/bin/python tools/gen_image_fixtures.py

Writes tests/fixtures/images/:
  src_*.png / *.jpg            inputs in many PNG/JPEG flavours (PIL and OpenCV encoders)
  expected/<name>.rgb.png      PIL's Image.open(f).convert("RGB") (".rgba.png": "RGBA", ".l.png": "L")
  resize/<src>_<filter>_<WxH>.png   PIL's Image.resize((W, H), filter) of src_resize*.png
  text_pil.png                 text chunks written by PIL (tEXt Latin-1, iTXt, zTXt, compressed iTXt)
  bad_*                        corrupt inputs (truncated, bad CRC, absurd size, not an image)
  infotext.json                A1111 create_infotext strings built with A1111's own join/quote code
Everything is deterministic (fixed seeds).
"""
import json
import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
rng = np.random.default_rng(1234)


def smooth_noise(h, w, c):
    """Gradients plus noise: exercises every code path without being flat."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h - 2, 1))], -1)
    base = np.concatenate([base] * ((c + 2) // 3), -1)[..., :c]
    noise = rng.integers(-40, 41, size=(h, w, c))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def save_expected(path, name):
    im = Image.open(path)
    im.convert("RGB").save(os.path.join(OUT, "expected", name + ".rgb.png"))
    im.convert("RGBA").save(os.path.join(OUT, "expected", name + ".rgba.png"))
    im.convert("L").save(os.path.join(OUT, "expected", name + ".l.png"))


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def adam7_png(rgb):
    """An interlaced (Adam7) 8-bit RGB PNG; neither PIL nor OpenCV writes these."""
    h, w, _ = rgb.shape
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def main():
    os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "resize"), exist_ok=True)
    srcs = []

    def add(name, fn):
        srcs.append(name)
        fn(os.path.join(OUT, name))

    rgb = smooth_noise(7, 13, 3)
    rgba = smooth_noise(9, 11, 4)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    gray = smooth_noise(5, 6, 1)[..., 0]
    add("src_rgb.png", lambda p: Image.fromarray(rgb).save(p))
    add("src_rgba.png", lambda p: Image.fromarray(rgba).save(p))
    add("src_gray.png", lambda p: Image.fromarray(gray).save(p))
    add("src_la.png", lambda p: Image.fromarray(rgba[..., [0, 3]], "LA").save(p))
    add("src_1x1.png", lambda p: Image.fromarray(rgb[:1, :1]).save(p))
    pal = Image.fromarray(rgb).quantize(colors=16)
    add("src_palette.png", lambda p: pal.save(p))
    palt = pal.copy()
    palt.info["transparency"] = 3
    add("src_palette_trns.png", lambda p: palt.save(p, transparency=3))
    add("src_bw1.png", lambda p: Image.fromarray(gray > 128).save(p))  # 1-bit
    add("src_gray4.png", lambda p: Image.fromarray(gray).convert("P", palette=Image.ADAPTIVE, colors=4).save(p, bits=2))
    # 16-bit RGB(A) written by OpenCV (BGR order); PIL keeps the high byte.
    rgb16 = (rng.integers(0, 65536, size=(6, 5, 3))).astype(np.uint16)
    add("src_rgb16.png", lambda p: cv2.imwrite(p, rgb16[..., ::-1]))
    rgba16 = (rng.integers(0, 65536, size=(4, 3, 4))).astype(np.uint16)
    add("src_rgba16.png", lambda p: cv2.imwrite(p, rgba16[..., [2, 1, 0, 3]]))
    # JPEG flavours.
    photo = smooth_noise(24, 40, 3)
    add("src_photo.jpg", lambda p: Image.fromarray(photo).save(p, quality=90))
    add("src_photo444.jpg", lambda p: Image.fromarray(photo).save(p, quality=95, subsampling=0))
    add("src_progressive.jpg", lambda p: Image.fromarray(photo).save(p, quality=80, progressive=True))
    add("src_gray.jpg", lambda p: Image.fromarray(photo[..., 1]).save(p, quality=90))
    add("src_cmyk.jpg", lambda p: Image.fromarray(photo).convert("CMYK").save(p, quality=90))
    add("src_odd.jpg", lambda p: Image.fromarray(smooth_noise(17, 9, 3)).save(p, quality=75))
    inter = np.random.default_rng(7).integers(0, 256, size=(11, 13, 3), dtype=np.uint8)  # own RNG: others unchanged
    add("src_interlaced.png", lambda p: open(p, "wb").write(adam7_png(inter)))
    for name in srcs:
        save_expected(os.path.join(OUT, name), name)

    # EXIF orientations (phone photos), as ImageOps.exif_transpose applies them.
    from PIL import ImageOps
    orient = np.random.default_rng(8).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    os.makedirs(os.path.join(OUT, "exif"), exist_ok=True)
    for o in range(1, 9):
        for ext in ("jpg", "png"):
            p = os.path.join(OUT, "exif", f"orient{o}.{ext}")
            exif = Image.Exif()
            exif[0x0112] = o
            Image.fromarray(orient).save(p, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
            ImageOps.exif_transpose(Image.open(p)).convert("RGB").save(os.path.join(OUT, "exif", f"orient{o}.{ext}.rgb.png"))

    # Interlaced (Adam7) PNG: PIL cannot write one; OpenCV cannot either, so build it from the
    # non-interlaced IDAT data by hand is overkill. Instead store a 16-bit gray PNG (PIL clips
    # these when converting, so only the raw values are recorded, as .npy-free text).
    g16 = (np.arange(12).reshape(3, 4) * 5000 + 7).astype(np.uint16)
    cv2.imwrite(os.path.join(OUT, "src_gray16.png"), g16)
    with open(os.path.join(OUT, "expected", "src_gray16.values.txt"), "w") as f:
        f.write(" ".join(str(int(v)) for v in g16.flatten()) + "\n")

    # Resize references.
    rs = smooth_noise(23, 37, 3)
    Image.fromarray(rs).save(os.path.join(OUT, "src_resize.png"))
    rsa = smooth_noise(19, 21, 4)
    rsa[..., 3] = np.clip(rsa[..., 3].astype(int) * 2 - 60, 0, 255)
    Image.fromarray(rsa).save(os.path.join(OUT, "src_resize_rgba.png"))
    Image.fromarray(rs[..., 0]).save(os.path.join(OUT, "src_resize_l.png"))
    filters = {"nearest": Image.NEAREST, "box": Image.BOX, "bilinear": Image.BILINEAR, "hamming": Image.HAMMING,
               "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    sizes = [(16, 10), (64, 48), (37, 9), (11, 23), (53, 23), (1, 1), (30, 5), (45, 8)]
    for src in ["src_resize", "src_resize_rgba", "src_resize_l"]:
        im = Image.open(os.path.join(OUT, src + ".png"))
        for fname, f in filters.items():
            for w, h in sizes:
                im.resize((w, h), f).save(os.path.join(OUT, "resize", f"{src}_{fname}_{w}x{h}.png"))

    # A1111's img2img resize modes (modules/images.py resize_image with no upscaler).
    os.makedirs(os.path.join(OUT, "resize_a1111"), exist_ok=True)
    for src in ["src_resize", "src_resize_tall"]:
        im = Image.open(os.path.join(OUT, "src_resize.png"))
        if src == "src_resize_tall":
            im = im.transpose(Image.TRANSPOSE)
            im.save(os.path.join(OUT, src + ".png"))
        for mode in (0, 1, 2):
            for w, h in [(64, 64), (20, 40), (80, 30), (37, 23), (8, 8)]:
                a1111_resize_image(mode, im, w, h).save(os.path.join(OUT, "resize_a1111", f"{src}_m{mode}_{w}x{h}.png"))

    # Text chunks written by PIL.
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "café, 1girl\nNegative prompt: bad\nSteps: 20")  # Latin-1 -> tEXt
    info.add_text("unicode", "猫 cat ✓")  # -> iTXt
    info.add_text("ztxt", "compressed " * 20, zip=True)  # Latin-1 + zip -> zTXt
    info.add_itxt("zitxt", "圧縮 " * 20, zip=True)  # compressed iTXt
    Image.fromarray(rgb).save(os.path.join(OUT, "text_pil.png"), pnginfo=info)

    # Corrupt inputs.
    good = open(os.path.join(OUT, "src_photo.jpg"), "rb").read()
    sos = good.find(b"\xff\xda")  # cut inside the entropy-coded scan
    open(os.path.join(OUT, "bad_truncated.jpg"), "wb").write(good[: sos + (len(good) - sos) // 2])
    good = open(os.path.join(OUT, "src_resize.png"), "rb").read()
    open(os.path.join(OUT, "bad_truncated.png"), "wb").write(good[: len(good) // 2])
    idat = good.find(b"IDAT")
    bad = bytearray(good)
    bad[idat + 10] ^= 0xFF
    open(os.path.join(OUT, "bad_crc.png"), "wb").write(bytes(bad))
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
    open(os.path.join(OUT, "bad_huge.png"), "wb").write(sig + ihdr + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b""))
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))  # 4e8 pixels > 2^28
    open(os.path.join(OUT, "bad_toomany.png"), "wb").write(sig + ihdr + png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + png_chunk(b"IEND", b""))
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16000, 16000, 8, 6, 0, 0, 0))  # allowed size, 4 bytes of data
    open(os.path.join(OUT, "bad_bomb.png"), "wb").write(sig + ihdr + png_chunk(b"IDAT", zlib.compress(b"\0" * 4)) + png_chunk(b"IEND", b""))
    open(os.path.join(OUT, "bad_notimage.png"), "wb").write(b"this is not an image, just text\n")
    open(os.path.join(OUT, "bad_webp.png"), "wb").write(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\0" * 24)

    write_infotext()

    # Seeds for fuzz/fuzz_image.cpp: small inputs of every flavour.
    corpus = os.path.join(OUT, "..", "..", "..", "fuzz", "corpus", "fuzz_image")
    os.makedirs(corpus, exist_ok=True)
    for name in ["src_rgba.png", "src_palette_trns.png", "src_bw1.png", "src_gray4.png", "src_rgba16.png", "src_interlaced.png",
                 "src_photo.jpg", "src_progressive.jpg", "src_gray.jpg", "src_cmyk.jpg", "text_pil.png", "exif/orient6.jpg",
                 "exif/orient6.png", "bad_truncated.jpg"]:
        with open(os.path.join(OUT, name), "rb") as f, open(os.path.join(corpus, name.replace("/", "_")), "wb") as g:
            g.write(f.read())
    with open(os.path.join(corpus, "infotext.txt"), "w", encoding="utf8") as f:
        f.write(json.load(open(os.path.join(OUT, "infotext.json"), encoding="utf8"))[1]["expected"])


def a1111_resize_image(resize_mode, im, width, height):
    """modules/images.py resize_image with upscaler_name None (A1111 1.10)."""
    def resize(im, w, h):
        return im.resize((w, h), resample=Image.LANCZOS)

    if resize_mode == 0:
        res = resize(im, width, height)
    elif resize_mode == 1:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    else:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        if ratio < src_ratio:
            fill_height = height // 2 - src_h // 2
            if fill_height > 0:
                res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
                res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h))
        elif ratio > src_ratio:
            fill_width = width // 2 - src_w // 2
            if fill_width > 0:
                res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
                res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0))
    return res


# --- A1111 infotext, with create_infotext's join and infotext_utils.quote (A1111 1.10).
def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext(prompt, negative_prompt, generation_params):
    generation_params_text = ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in generation_params.items() if v is not None])
    negative_prompt_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_prompt_text}\n{generation_params_text}".strip()


def write_infotext():
    cases = []

    def case(inp, prompt, neg, params):
        cases.append({"input": inp, "expected": create_infotext(prompt, neg, params)})

    # A typical txt2img (values as A1111 holds them: ints from the UI sliders).
    case({"prompt": "a photo of a cat, (masterpiece:1.2)", "negative_prompt": "blurry, lowres", "steps": 20, "sampler": "euler_a",
          "scheduler": "normal", "cfg_scale": 7, "seed": 1, "width": 512, "height": 512, "model_name": "v1-5-pruned-emaonly",
          "model_hash": "6ce0161689", "clip_skip": 0, "rng": "torch-cpu", "version": "easel 0.1"},
         "a photo of a cat, (masterpiece:1.2)", "blurry, lowres",
         {"Steps": 20, "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": 7, "Seed": 1, "Size": "512x512",
          "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "Denoising strength": None, "Clip skip": None,
          "RNG": "CPU", "Version": "easel 0.1"})
    # img2img, Karras, clip skip, GPU RNG (omitted), no negative, 7.5 CFG, quoted model name, extras.
    case({"prompt": "  landscape\nwith two lines  ", "negative_prompt": "", "steps": 30, "sampler": "dpmpp_2m",
          "scheduler": "karras", "cfg_scale": 7.5, "seed": 4294967295, "width": 768, "height": 512,
          "model_name": "my,model: v2", "model_hash": "", "denoising_strength": 0.75, "clip_skip": 2, "rng": "philox",
          "extra": [["Lora hashes", "\"a: 0123abcd\""], ["ControlNet 0", "Module: canny, Model: x"]], "version": "easel 0.1"},
         "  landscape\nwith two lines  ", "",
         {"Steps": 30, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.5, "Seed": 4294967295, "Size": "768x512",
          "Model": "my,model: v2", "Denoising strength": 0.75, "Clip skip": 2,
          "Lora hashes": "\"a: 0123abcd\"", "ControlNet 0": "Module: canny, Model: x", "Version": "easel 0.1"})
    # DPM++ 2M without Karras (A1111's "Automatic" would mean Karras) and non-ASCII text.
    case({"prompt": "猫, café", "negative_prompt": "ugly\nsecond line", "steps": 4, "sampler": "dpmpp_2m", "scheduler": "normal",
          "cfg_scale": 1.5, "seed": 0, "width": 64, "height": 64, "model_name": "tiny", "model_hash": "abcdef1234",
          "clip_skip": 1, "rng": "torch-cpu", "version": "easel 0.1"},
         "猫, café", "ugly\nsecond line",
         {"Steps": 4, "Sampler": "DPM++ 2M", "Schedule type": "Uniform", "CFG scale": 1.5, "Seed": 0, "Size": "64x64",
          "Model hash": "abcdef1234", "Model": "tiny", "RNG": "CPU", "Version": "easel 0.1"})
    # DDIM, denoising strength 0.3 (float32 -> "0.3"), quotes and backslashes in a quoted value.
    case({"prompt": "p", "negative_prompt": "n", "steps": 50, "sampler": "ddim", "scheduler": "normal", "cfg_scale": 12,
          "seed": 123456789012, "width": 512, "height": 768, "model_name": "a \"quoted\", \\ name\twith tab",
          "model_hash": "", "denoising_strength": 0.3, "clip_skip": 0, "rng": "torch-cpu", "version": ""},
         "p", "n",
         {"Steps": 50, "Sampler": "DDIM", "Schedule type": "Automatic", "CFG scale": 12, "Seed": 123456789012,
          "Size": "512x768", "Model": "a \"quoted\", \\ name\twith tab", "Denoising strength": 0.3, "RNG": "CPU"})
    with open(os.path.join(OUT, "infotext.json"), "w", encoding="utf8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
