#include "io/image.h"

#include <jpeglib.h>
#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace easel {

namespace {

constexpr int64_t kMaxSide = 16384;
constexpr int64_t kMaxPixels = 1ll << 28;

void check_dims(int64_t w, int64_t h, const std::string& name) {
  if (w <= 0 || h <= 0) fail("image", name + ": image has no pixels");
  if (w > kMaxSide || h > kMaxSide || w * h > kMaxPixels)
    fail("image", name + ": image " + std::to_string(w) + "x" + std::to_string(h) + " is too large (max " +
                      std::to_string(kMaxSide) + " per side)");
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("image", path + ": no such file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("image", path + ": cannot open: " + std::strerror(errno));
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}

Image convert_channels(Image img, int channels) {
  if (channels == 0 || channels == img.channels) return img;
  Image out;
  out.width = img.width;
  out.height = img.height;
  out.channels = channels;
  size_t n = (size_t)img.width * img.height;
  out.pixels.resize(n * channels);
  for (size_t i = 0; i < n; i++) {
    const uint8_t* s = &img.pixels[i * img.channels];
    uint8_t r, g, b, a = 255;
    if (img.channels >= 3) r = s[0], g = s[1], b = s[2];
    else r = g = b = s[0];
    if (img.channels == 4 || img.channels == 2) a = s[img.channels - 1];
    uint8_t* d = &out.pixels[i * channels];
    if (channels == 1) {
      d[0] = (uint8_t)((r * 299 + g * 587 + b * 114 + 500) / 1000);  // PIL's "L"
    } else {
      d[0] = r, d[1] = g, d[2] = b;
      if (channels == 4) d[3] = a;
    }
  }
  return out;
}

// --- PNG (libpng simplified API: errors come back as messages, never longjmp into our frames)
Image decode_png(const uint8_t* data, size_t size, const std::string& name) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&im, data, size))
    fail("image", name + ": corrupt PNG data (libpng: " + std::string(im.message) + ")");
  check_dims(im.width, im.height, name);
  bool alpha = im.format & PNG_FORMAT_FLAG_ALPHA;
  im.format = alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
  Image img;
  img.width = (int)im.width;
  img.height = (int)im.height;
  img.channels = alpha ? 4 : 3;
  img.pixels.resize(PNG_IMAGE_SIZE(im));
  if (!png_image_finish_read(&im, nullptr, img.pixels.data(), 0, nullptr)) {
    std::string msg = im.message;
    png_image_free(&im);
    fail("image", name + ": corrupt PNG data (libpng: " + msg + ")");
  }
  return img;
}

// --- JPEG (libjpeg with an error manager that longjmps back here only)
struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr c) {
  JpegErr* e = (JpegErr*)c->err;
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jb, 1);
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.output_message = [](j_common_ptr) {};
  Image* img = new Image();  // heap: no destructors skipped by longjmp
  if (setjmp(err.jb)) {
    jpeg_destroy_decompress(&cinfo);
    delete img;
    fail("image", name + ": corrupt JPEG data (libjpeg: " + std::string(err.msg) + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    delete img;
    fail("image", name + ": CMYK JPEG images are not supported");
  }
  if (cinfo.image_width > kMaxSide || cinfo.image_height > kMaxSide ||
      (int64_t)cinfo.image_width * cinfo.image_height > kMaxPixels) {
    jpeg_destroy_decompress(&cinfo);
    delete img;
    check_dims(cinfo.image_width, cinfo.image_height, name);
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  img->width = (int)cinfo.output_width;
  img->height = (int)cinfo.output_height;
  img->channels = 3;
  img->pixels.resize((size_t)img->width * img->height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img->pixels.data() + (size_t)cinfo.output_scanline * img->width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  Image out = std::move(*img);
  delete img;
  return out;
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name, int channels) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (size >= 8 && std::memcmp(data, png_sig, 8) == 0) return convert_channels(decode_png(data, size, name), channels);
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
    return convert_channels(decode_jpeg(data, size, name), channels);
  fail("image", name + ": not a PNG or JPEG image");
}

Image read_image(const std::string& path, int channels) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path, channels);
}

namespace {

struct PngWriter {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string error;
  ~PngWriter() { png_destroy_write_struct(&png, &info); }
};

bool latin1(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Plain C frame for libpng's longjmp: nothing with a destructor lives here.
bool write_png_file(FILE* f, const Image& img, const TextChunks& text, PngWriter& w) {
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, [](png_structp p, png_const_charp msg) {
    ((PngWriter*)png_get_error_ptr(p))->error = msg;
    png_longjmp(p, 1);
  }, nullptr);
  if (!w.png) return false;
  w.info = png_create_info_struct(w.png);
  if (!w.info) return false;
  if (setjmp(png_jmpbuf(w.png))) return false;
  png_init_io(w.png, f);
  int type = img.channels == 4 ? PNG_COLOR_TYPE_RGBA : img.channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY;
  png_set_IHDR(w.png, w.info, img.width, img.height, 8, type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_text> chunks(text.size());
  for (size_t i = 0; i < text.size(); i++) {
    std::memset(&chunks[i], 0, sizeof(png_text));
    chunks[i].key = (png_charp)text[i].first.c_str();
    chunks[i].text = (png_charp)text[i].second.c_str();
    // A1111 writes "parameters" as tEXt when it is Latin-1 and as iTXt otherwise.
    chunks[i].compression = latin1(text[i].second) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    if (chunks[i].compression == PNG_TEXT_COMPRESSION_NONE) chunks[i].text_length = text[i].second.size();
    else chunks[i].itxt_length = text[i].second.size();
  }
  if (!chunks.empty()) png_set_text(w.png, w.info, chunks.data(), (int)chunks.size());
  png_write_info(w.png, w.info);
  for (int y = 0; y < img.height; y++)
    png_write_row(w.png, img.pixels.data() + (size_t)y * img.width * img.channels);
  png_write_end(w.png, nullptr);
  return true;
}

}  // namespace

void write_png(const std::string& path, const Image& img, const TextChunks& text) {
  if (img.channels != 1 && img.channels != 3 && img.channels != 4) fail("image", path + ": unsupported channel count");
  if ((size_t)img.width * img.height * img.channels != img.pixels.size())
    fail("image", path + ": pixel buffer does not match the image size");
  namespace fs = std::filesystem;
  fs::path p(path);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::string tmp = (dir / ("." + p.filename().string() + ".tmp" + std::to_string(::getpid()))).string();
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("image", path + ": cannot write: " + std::strerror(errno));
  PngWriter w;
  bool ok = write_png_file(f, img, text, w);
  int err = errno;
  if (ok && std::fflush(f) != 0) ok = false, err = errno;
  if (std::fclose(f) != 0 && ok) ok = false, err = errno;
  if (!ok) {
    std::remove(tmp.c_str());
    fail("image", path + ": cannot write: " + (w.error.empty() || err ? std::strerror(err) : w.error));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    fail("image", path + ": cannot write: " + std::strerror(err));
  }
}

TextChunks read_png_text(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  TextChunks out;
  // Walk the chunks directly (tEXt/iTXt uncompressed); bounds-checked.
  size_t pos = 8;
  if (bytes.size() < 8 || std::memcmp(bytes.data() + 1, "PNG", 3) != 0) fail("image", path + ": not a PNG image");
  while (pos + 12 <= bytes.size()) {
    uint32_t len = (uint32_t)bytes[pos] << 24 | bytes[pos + 1] << 16 | bytes[pos + 2] << 8 | bytes[pos + 3];
    std::string type((const char*)&bytes[pos + 4], 4);
    if (len > bytes.size() - pos - 12) break;
    const char* d = (const char*)&bytes[pos + 8];
    if (type == "tEXt" || type == "iTXt") {
      std::string body(d, len);
      size_t z = body.find('\0');
      if (z != std::string::npos) {
        std::string key = body.substr(0, z), val;
        if (type == "tEXt") {
          val = body.substr(z + 1);
        } else if (z + 2 < body.size() && body[z + 1] == 0) {  // uncompressed iTXt
          size_t lang = body.find('\0', z + 3);
          size_t tkey = lang == std::string::npos ? lang : body.find('\0', lang + 1);
          if (tkey != std::string::npos) val = body.substr(tkey + 1);
        }
        out.emplace_back(key, val);
      }
    }
    if (type == "IEND") break;
    pos += 12 + len;
  }
  return out;
}

Tensor image_to_tensor(const Image& img0) {
  Image img = convert_channels(img0, 3);
  int64_t H = img.height, W = img.width;
  Tensor t = Tensor::empty({1, 3, H, W});
  float* p = t.f32();
  for (int64_t c = 0; c < 3; c++)
    for (int64_t i = 0; i < H * W; i++) p[c * H * W + i] = img.pixels[i * 3 + c] / 255.0f * 2.0f - 1.0f;
  return t;
}

Image tensor01_to_image(const Tensor& t) {
  if (t.dim() != 4 || t.size(0) != 1 || t.size(1) != 3) fail("image", "expected a [1, 3, H, W] tensor, got " + t.str());
  Image img;
  img.height = (int)t.size(2);
  img.width = (int)t.size(3);
  img.channels = 3;
  int64_t HW = (int64_t)img.width * img.height;
  img.pixels.resize(HW * 3);
  const float* p = t.f32();
  for (int64_t c = 0; c < 3; c++)
    for (int64_t i = 0; i < HW; i++) {
      float v = std::clamp(p[c * HW + i], 0.0f, 1.0f) * 255.0f;
      img.pixels[i * 3 + c] = (uint8_t)std::nearbyint(v);  // numpy round: half to even
    }
  return img;
}

Image resize_image(const Image& src, int width, int height) {
  check_dims(width, height, "resize");
  Image out;
  out.width = width;
  out.height = height;
  out.channels = src.channels;
  out.pixels.resize((size_t)width * height * src.channels);
  // Separable triangle filter with support scaled by the shrink factor (PIL's BILINEAR).
  auto weights = [](int in, int outn, std::vector<int>& lo, std::vector<std::vector<float>>& w) {
    double scale = (double)in / outn, support = std::max(1.0, scale);
    lo.resize(outn);
    w.resize(outn);
    for (int o = 0; o < outn; o++) {
      double center = (o + 0.5) * scale;
      int a = std::max(0, (int)std::floor(center - support)), b = std::min(in, (int)std::ceil(center + support));
      lo[o] = a;
      double sum = 0;
      w[o].clear();
      for (int i = a; i < b; i++) {
        double x = std::max(0.0, 1.0 - std::fabs((i + 0.5 - center) / support));
        w[o].push_back((float)x);
        sum += x;
      }
      for (auto& x : w[o]) x = sum > 0 ? (float)(x / sum) : 0.f;
    }
  };
  std::vector<int> xlo, ylo;
  std::vector<std::vector<float>> xw, yw;
  weights(src.width, width, xlo, xw);
  weights(src.height, height, ylo, yw);
  int C = src.channels;
  std::vector<float> tmp((size_t)src.height * width * C);
  for (int y = 0; y < src.height; y++)
    for (int x = 0; x < width; x++)
      for (int c = 0; c < C; c++) {
        float acc = 0;
        for (size_t k = 0; k < xw[x].size(); k++) acc += xw[x][k] * src.pixels[((size_t)y * src.width + xlo[x] + k) * C + c];
        tmp[((size_t)y * width + x) * C + c] = acc;
      }
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      for (int c = 0; c < C; c++) {
        float acc = 0;
        for (size_t k = 0; k < yw[y].size(); k++) acc += yw[y][k] * tmp[((size_t)(ylo[y] + k) * width + x) * C + c];
        out.pixels[((size_t)y * width + x) * C + c] = (uint8_t)std::clamp(std::lround(acc), 0l, 255l);
      }
  return out;
}

}  // namespace easel
