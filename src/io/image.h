// 8-bit images: PNG (libpng) and JPEG (libjpeg) reading, PNG writing with text chunks,
// and conversions to/from model tensors. Formats are sniffed from content.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace easel {

struct Image {
  int width = 0, height = 0, channels = 0;  // channels: 1 (gray), 3 (RGB), 4 (RGBA)
  std::vector<uint8_t> pixels;               // [H, W, C] row-major
};

using TextChunks = std::vector<std::pair<std::string, std::string>>;

// Reads PNG or JPEG; converts to `channels` (3 = RGB, 4 = RGBA, 1 = gray; 0 = as stored).
// Errors: "[image] FILE: not a PNG or JPEG image", "...: corrupt PNG data (...)".
Image read_image(const std::string& path, int channels = 3);
Image decode_image(const uint8_t* data, size_t size, const std::string& name, int channels = 3);
// Writes atomically (temp file in the same folder, then rename): on any error no file is left.
void write_png(const std::string& path, const Image& img, const TextChunks& text = {});
TextChunks read_png_text(const std::string& path);

// RGB image -> [1, 3, H, W] in [-1, 1] (diffusers' VaeImageProcessor.preprocess).
Tensor image_to_tensor(const Image& img);
// [1, 3, H, W] in [0, 1] -> RGB, rounded as diffusers' numpy_to_pil: round(x * 255).
Image tensor01_to_image(const Tensor& t);
// Bilinear resize (antialiased when shrinking), for init images of another size.
Image resize_image(const Image& img, int width, int height);

}  // namespace easel
