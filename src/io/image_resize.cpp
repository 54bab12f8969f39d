// PIL-exact image resizing (Image.resize), so init/control images resized here match the
// diffusers (VaeImageProcessor, lanczos) and A1111 (LANCZOS) references bit for bit.
//   https://github.com/python-pillow/Pillow/blob/main/src/libImaging/Resample.c
//   https://github.com/python-pillow/Pillow/blob/main/src/libImaging/Geometry.c (NEAREST)
// The filter coefficients are computed in double exactly as PIL does; contraction into FMA
// could change a rounding, so it is turned off for this file.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/image.h"

namespace easel {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}
double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * M_PI;
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as PIL
}
double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}
double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_of(ResizeFilter f) {
  switch (f) {
    case ResizeFilter::Box: return {box_filter, 0.5};
    case ResizeFilter::Bilinear: return {bilinear_filter, 1.0};
    case ResizeFilter::Hamming: return {hamming_filter, 1.0};
    case ResizeFilter::Bicubic: return {bicubic_filter, 2.0};
    case ResizeFilter::Lanczos: return {lanczos_filter, 3.0};
    default: fail("image", "resize: no convolution filter for this mode");
  }
}

// PIL's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, first input index,
// tap count, and `ksize` fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> xmin, count;
  std::vector<int32_t> k;  // [out, ksize]
};

Coeffs precompute(int in_size, float box0, float box1, int out_size, const Filter& f) {
  const double in0 = box0, in1 = box1;  // PIL passes the box as floats
  double scale = (in1 - in0) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
  double support = f.support * filterscale;
  Coeffs c;
  c.ksize = (int)std::ceil(support) * 2 + 1;
  c.xmin.resize(out_size);
  c.count.resize(out_size);
  c.k.assign((size_t)out_size * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; xx++) {
    double center = in0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
      double v = f.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (int x = 0; x < xmax; x++) {
      if (ww != 0.0) w[x] /= ww;
      double scaled = w[x] * (1 << kPrecisionBits);
      c.k[(size_t)xx * c.ksize + x] = w[x] < 0 ? (int32_t)(-0.5 + scaled) : (int32_t)(0.5 + scaled);
    }
    c.xmin[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int v) {
  if (v >= (255 << kPrecisionBits)) return 255;
  if (v <= 0) return 0;
  return (uint8_t)(v >> kPrecisionBits);
}

// in: [rows, in_w, C] -> out: [rows, out_w, C], rows starting at `row0` of the input.
void resample_horizontal(const Image& in, Image& out, int row0, const Coeffs& c) {
  const int C = in.channels;
  for (int y = 0; y < out.height; y++) {
    const uint8_t* src = in.row(y + row0);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out.width; x++) {
      const int32_t* k = &c.k[(size_t)x * c.ksize];
      const uint8_t* s = src + (size_t)c.xmin[x] * C;
      for (int ch = 0; ch < C; ch++) {
        int ss = 1 << (kPrecisionBits - 1);
        for (int i = 0; i < c.count[x]; i++) ss += s[(size_t)i * C + ch] * k[i];
        dst[(size_t)x * C + ch] = clip8(ss);
      }
    }
  }
}

void resample_vertical(const Image& in, Image& out, const Coeffs& c, const std::vector<int>& ymin) {
  const int C = in.channels;
  const size_t stride = (size_t)in.width * C;
  for (int y = 0; y < out.height; y++) {
    const int32_t* k = &c.k[(size_t)y * c.ksize];
    const uint8_t* src = in.pixels.data() + (size_t)ymin[y] * stride;
    uint8_t* dst = out.row(y);
    for (size_t x = 0; x < stride; x++) {
      int ss = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < c.count[y]; i++) ss += src[(size_t)i * stride + x] * k[i];
      dst[x] = clip8(ss);
    }
  }
}

Image blank(int w, int h, int c) {
  Image o;
  o.width = w;
  o.height = h;
  o.channels = c;
  o.pixels.resize((size_t)w * h * c);
  return o;
}

// PIL's ImagingScaleAffine (NEAREST): source coordinate accumulated in double.
Image resize_nearest(const Image& in, int w, int h) {
  Image out = blank(w, h, in.channels);
  const double a0 = (double)in.width / w, a4 = (double)in.height / h;
  std::vector<int> xin(w);
  double xo = a0 * 0.5;
  for (int x = 0; x < w; x++, xo += a0) xin[x] = std::min(xo < 0.0 ? 0 : (int)xo, in.width - 1);
  double yo = a4 * 0.5;
  const int C = in.channels;
  for (int y = 0; y < h; y++, yo += a4) {
    int yi = std::min(yo < 0.0 ? 0 : (int)yo, in.height - 1);
    for (int x = 0; x < w; x++) std::memcpy(out.row(y) + (size_t)x * C, in.row(yi) + (size_t)xin[x] * C, C);
  }
  return out;
}

// PIL's ImagingResampleInner; `box` is the source region (x0, y0, x1, y1), as Image.resize(box=).
Image resample(const Image& in, int w, int h, const Filter& f, const float box[4]) {
  bool full = box[0] == 0 && box[1] == 0 && box[2] == in.width && box[3] == in.height;
  // As PIL: compared with the output size, so a zero-width box still needs its pass.
  bool need_h = w != in.width || box[0] != 0 || box[2] != w, need_v = h != in.height || box[1] != 0 || box[3] != h;
  if (!need_h && !need_v) return in;
  Coeffs ch = precompute(in.width, box[0], box[2], w, f), cv = precompute(in.height, box[1], box[3], h, f);
  // Pillow (seen in 13.0's ImagingResample) runs the vertical pass first when it shrinks the
  // height by more than twice what the horizontal pass takes off the width; the order changes
  // the 8-bit rounding of the intermediate image.
  if (full && need_h && need_v && in.height > h && in.height - h > 2 * (in.width - w)) {
    Image tmp = blank(in.width, h, in.channels);
    resample_vertical(in, tmp, cv, cv.xmin);
    Image out = blank(w, h, in.channels);
    resample_horizontal(tmp, out, 0, ch);
    return out;
  }
  std::vector<int> ymin = cv.xmin;
  const Image* src = &in;
  Image tmp;
  if (need_h) {
    // Only the source rows the vertical pass reads.
    int first = cv.xmin[0], last = cv.xmin[h - 1] + cv.count[h - 1];
    for (int& y : ymin) y -= first;
    tmp = blank(w, last - first, in.channels);
    resample_horizontal(in, tmp, first, ch);
    if (!need_v) return tmp;
    src = &tmp;
  }
  Image out = blank(w, h, in.channels);
  resample_vertical(*src, out, cv, ymin);
  return out;
}

Image resample(const Image& in, int w, int h, const Filter& f) {
  const float box[4] = {0.0f, 0.0f, (float)in.width, (float)in.height};
  return resample(in, w, h, f, box);
}

// Image.paste(src, (x, y)) onto an RGB canvas, clipped.
void paste(Image& dst, const Image& src, int x0, int y0) {
  for (int y = std::max(0, y0); y < std::min(dst.height, y0 + src.height); y++)
    for (int x = std::max(0, x0); x < std::min(dst.width, x0 + src.width); x++)
      std::memcpy(dst.row(y) + (size_t)x * 3, src.row(y - y0) + (size_t)(x - x0) * 3, 3);
}

}  // namespace

Image resize_a1111(const Image& img0, int width, int height, int mode) {
  if (mode < 0 || mode > 2) fail("image", "resize mode " + std::to_string(mode) + " (0 just resize, 1 crop and resize, 2 resize and fill)");
  if (width <= 0 || height <= 0 || width > kMaxImageSide || height > kMaxImageSide)
    fail("image", "resize: invalid target size " + std::to_string(width) + "x" + std::to_string(height));
  Image im = convert_image(img0, 3);
  if (mode == 0) return resize_image(im, width, height, ResizeFilter::Lanczos);
  // Python's / and // on ints: ratios in double, sizes floored.
  double ratio = (double)width / height, src_ratio = (double)im.width / im.height;
  bool width_fits = mode == 1 ? ratio > src_ratio : ratio < src_ratio;
  bool height_fits = mode == 1 ? ratio <= src_ratio : ratio >= src_ratio;
  int src_w = width_fits ? width : (int)((int64_t)im.width * height / im.height);
  int src_h = height_fits ? height : (int)((int64_t)im.height * width / im.width);
  if (src_w <= 0 || src_h <= 0) fail("image", "resize: the image is too thin for " + std::to_string(width) + "x" + std::to_string(height));
  Image resized = resize_image(im, src_w, src_h, ResizeFilter::Lanczos);
  Image res = blank(width, height, 3);  // Image.new("RGB"): black
  paste(res, resized, width / 2 - src_w / 2, height / 2 - src_h / 2);
  if (mode == 2) {
    // Fill the bars by stretching the edge rows/columns: resize() with a zero-size box and
    // PIL's default BICUBIC filter (which blends the two outermost lines).
    const Filter bicubic = filter_of(ResizeFilter::Bicubic);
    const float rw = (float)resized.width, rh = (float)resized.height;
    if (ratio < src_ratio) {
      int fill = height / 2 - src_h / 2;
      if (fill > 0) {
        const float top[4] = {0, 0, (float)width, 0}, bottom[4] = {0, rh, (float)width, rh};
        paste(res, resample(resized, width, fill, bicubic, top), 0, 0);
        paste(res, resample(resized, width, fill, bicubic, bottom), 0, fill + src_h);
      }
    } else if (ratio > src_ratio) {
      int fill = width / 2 - src_w / 2;
      if (fill > 0) {
        const float left[4] = {0, 0, 0, (float)height}, right[4] = {rw, 0, rw, (float)height};
        paste(res, resample(resized, fill, height, bicubic, left), 0, 0);
        paste(res, resample(resized, fill, height, bicubic, right), fill + src_w, 0);
      }
    }
  }
  return res;
}

ResizeFilter parse_resize_filter(const std::string& name) {
  if (name == "nearest") return ResizeFilter::Nearest;
  if (name == "box") return ResizeFilter::Box;
  if (name == "bilinear") return ResizeFilter::Bilinear;
  if (name == "hamming") return ResizeFilter::Hamming;
  if (name == "bicubic") return ResizeFilter::Bicubic;
  if (name == "lanczos") return ResizeFilter::Lanczos;
  fail("image", "unknown resize filter '" + name + "' (nearest, box, bilinear, hamming, bicubic, lanczos)");
}

Image resize_image(const Image& img, int width, int height, ResizeFilter filter) {
  if (width <= 0 || height <= 0 || width > kMaxImageSide || height > kMaxImageSide ||
      (int64_t)width * height > kMaxImagePixels)
    fail("image", "resize: invalid target size " + std::to_string(width) + "x" + std::to_string(height));
  if (img.width <= 0 || img.height <= 0 || (size_t)img.width * img.height * img.channels != img.pixels.size())
    fail("image", "resize: invalid source image");
  if (filter == ResizeFilter::Nearest) return resize_nearest(img, width, height);
  if (img.channels != 4) return resample(img, width, height, filter_of(filter));
  // PIL resizes RGBA as premultiplied "RGBa": rgbA2rgba, resample, rgba2rgbA.
  Image pm = img;
  for (size_t i = 0; i < pm.pixels.size(); i += 4) {
    int a = pm.pixels[i + 3];
    for (int c = 0; c < 3; c++) {
      int t = pm.pixels[i + c] * a + 128;
      pm.pixels[i + c] = (uint8_t)(((t >> 8) + t) >> 8);
    }
  }
  Image out = resample(pm, width, height, filter_of(filter));
  for (size_t i = 0; i < out.pixels.size(); i += 4) {
    int a = out.pixels[i + 3];
    if (a == 255 || a == 0) continue;
    for (int c = 0; c < 3; c++) out.pixels[i + c] = (uint8_t)std::min(255, (255 * out.pixels[i + c]) / a);
  }
  return out;
}

}  // namespace easel
