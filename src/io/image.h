// 8-bit images: PNG (libpng) and JPEG (libjpeg) decoding that matches what PIL gives
// (diffusers' load_image, A1111), atomic PNG writing with A1111-style text chunks,
// PIL-exact resampling, and conversions to/from model tensors.
//   PIL decode/convert: https://github.com/python-pillow/Pillow/blob/main/src/libImaging/Convert.c
//   PIL resize:         https://github.com/python-pillow/Pillow/blob/main/src/libImaging/Resample.c
//   diffusers:          diffusers/image_processor.py (VaeImageProcessor.preprocess/postprocess)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace easel {

struct Image {
  int width = 0, height = 0, channels = 0;  // channels: 1 (gray), 3 (RGB), 4 (RGBA)
  std::vector<uint8_t> pixels;               // [H, W, C] row-major
  uint8_t* row(int y) { return pixels.data() + (size_t)y * width * channels; }
  const uint8_t* row(int y) const { return pixels.data() + (size_t)y * width * channels; }
};

// key -> value, UTF-8. Written as tEXt when the value fits Latin-1 (stored as Latin-1), else as
// uncompressed iTXt: what PIL's PngInfo.add_text does, so A1111 and PIL-based readers agree.
using TextChunks = std::vector<std::pair<std::string, std::string>>;

// Images larger than this are refused before anything is allocated.
constexpr int kMaxImageSide = 16384;
constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

// Reads PNG or JPEG (sniffed from the bytes, not the extension) and converts to `channels`:
// 3 = RGB (PIL's convert("RGB"): alpha dropped), 4 = RGBA, 1 = gray (PIL's "L" weights),
// 0 = as stored (gray -> 1, gray+alpha -> 4, palette -> 3 or 4, RGB -> 3, RGBA -> 4).
// PNG: palette, 1/2/4/16-bit, tRNS, interlaced; 16-bit samples keep their high byte (as PIL
// does for RGB; PIL clips 16-bit gray instead, which we do not copy). No gamma handling (PIL
// has none). JPEG: gray, YCbCr, CMYK/YCCK (converted as PIL's CMYK -> RGB).
// exif_transpose: apply the EXIF orientation (JPEG APP1, PNG eXIf) as PIL's ImageOps.exif_transpose,
// which diffusers' load_image and A1111's img2img both do (phone photos are stored sideways).
// Errors (easel::Error): "[image] FILE: not a PNG or JPEG image", "[image] FILE: corrupt PNG data
// (libpng: ...)", "...: truncated JPEG data", "...: image WxH is too large ...". max_pixels: a caller's
// tighter budget, checked from the header before anything of the image's size is allocated.
Image read_image(const std::string& path, int channels = 3, bool exif_transpose = true,
                 int64_t max_pixels = kMaxImagePixels);
Image decode_image(const uint8_t* data, size_t size, const std::string& name, int channels = 3,
                   bool exif_transpose = true, int64_t max_pixels = kMaxImagePixels);
// Channel conversion with PIL's formulas (L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16).
Image convert_image(const Image& img, int channels);

// Writes a PNG atomically: a temporary file in the same folder, fsync, then rename. On any
// error no file is left behind (and an existing file at `path` is untouched):
// "[image] out.png: cannot write: No space left on device".
void write_png(const std::string& path, const Image& img, const TextChunks& text = {});
// The same for any bytes (JSON, LoRA files): temporary file, fsync, rename; errors name the path.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_text_file(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
// Encodes to memory (same chunks as write_png).
std::vector<uint8_t> encode_png(const Image& img, const TextChunks& text = {}, const std::string& name = "png");
// Text chunks in file order: tEXt (Latin-1 -> UTF-8), zTXt, iTXt (compressed or not).
TextChunks read_png_text(const std::string& path);
TextChunks png_text_from_memory(const uint8_t* data, size_t size, const std::string& name);

// Image -> [1, 3, H, W] float32 in [-1, 1]: diffusers' VaeImageProcessor.preprocess
// (x / 255 then 2x - 1, in float32). Gray/RGBA are converted to RGB first.
Tensor image_to_tensor(const Image& img);
// Image -> [1, 3, H, W] in [0, 1] (x / 255), e.g. ControlNet condition images.
Tensor image_to_tensor01(const Image& img);
// [B, 3, H, W] in [0, 1] -> RGB image `index`: clamp to [0, 1], then round(x * 255) half to even,
// as diffusers' numpy_to_pil. NaN becomes 0.
Image tensor01_to_image(const Tensor& t, int64_t index = 0);
// [B, 3, H, W] in [-1, 1] -> RGB: diffusers' postprocess, (x / 2 + 0.5).clamp(0, 1) in float32, then as above.
Image tensor_to_image(const Tensor& t, int64_t index = 0);

// PIL's resampling filters (Image.Resampling).
enum class ResizeFilter { Nearest, Box, Bilinear, Hamming, Bicubic, Lanczos };
// Resizes like PIL's Image.resize(size, filter): same coefficients, same 8-bit fixed-point
// arithmetic, same pass order, RGBA premultiplied during resampling, so results are
// bit-identical to PIL. Lanczos is the default of diffusers' VaeImageProcessor and A1111.
Image resize_image(const Image& img, int width, int height, ResizeFilter filter = ResizeFilter::Lanczos);
// A1111's img2img resize modes (modules/images.py resize_image, no upscaler: LANCZOS), RGB out:
// 0 = just resize, 1 = crop and resize (cover, centred), 2 = resize and fill (fit, centred, the
// bars filled by stretching the edge lines). Bit-identical to A1111 with Pillow 13.
Image resize_a1111(const Image& img, int width, int height, int mode);
// "nearest", "box", "bilinear", "hamming", "bicubic", "lanczos" (PIL's names); throws otherwise.
ResizeFilter parse_resize_filter(const std::string& name);

}  // namespace easel
