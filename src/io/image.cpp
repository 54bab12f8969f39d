// PNG/JPEG decoding, PNG encoding with text chunks, tensor conversions. See image.h.
// libpng and libjpeg report errors by longjmp: every setjmp lives in a small function whose
// locals are all trivially destructible, and the library objects are owned by RAII structs in
// the caller, so an error unwinds nothing and leaks nothing.
#include "io/image.h"

#include <fcntl.h>
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace easel {

namespace {

void check_dims(int64_t w, int64_t h, const std::string& name, int64_t max_pixels = kMaxImagePixels) {
  if (w <= 0 || h <= 0) fail("image", name + ": image has no pixels (" + std::to_string(w) + "x" + std::to_string(h) + ")");
  if (w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels)
    fail("image", name + ": image " + std::to_string(w) + "x" + std::to_string(h) + " is too large (at most " +
                      std::to_string(kMaxImageSide) + " pixels per side and 2^28 pixels)");
  if (w * h > max_pixels)
    fail("image", name + ": image " + std::to_string(w) + "x" + std::to_string(h) + " (" + std::to_string(w * h) +
                      " pixels) is over this use's limit of " + std::to_string(max_pixels) +
                      " pixels; downscale it first (nothing was decoded)");
}

// Whole file into memory (images are small next to the models).
std::vector<uint8_t> read_all(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("image", path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("image", path + ": not a regular file");
  }
  if (st.st_size > (off_t(1) << 31)) {
    ::close(fd);
    fail("image", path + ": file is too large for an image (" + std::to_string(st.st_size) + " bytes)");
  }
  std::vector<uint8_t> buf((size_t)st.st_size);
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      fail("image", path + ": read error: " + (n < 0 ? std::strerror(e) : "file shrank while reading"));
    }
    got += (size_t)n;
  }
  ::close(fd);
  return buf;
}

// ---------------------------------------------------------------------------------------- PNG read
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  char error[256] = {0};
  ~PngReader() { png_destroy_read_struct(&png, &info, nullptr); }
};

void png_read_mem(png_structp p, png_bytep out, size_t n) {
  auto* r = (PngReader*)png_get_io_ptr(p);
  if (n > r->size - r->pos) png_error(p, "unexpected end of file (truncated)");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

void png_on_error(png_structp p, png_const_charp msg) {
  auto* r = (PngReader*)png_get_error_ptr(p);
  std::snprintf(r->error, sizeof r->error, "%s", msg);
  png_longjmp(p, 1);
}

// Header and transforms. Output: 8-bit gray, gray+alpha, RGB or RGBA (no gamma, like PIL).
bool png_read_header(PngReader& r, png_uint_32* w, png_uint_32* h) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_set_read_fn(r.png, &r, png_read_mem);
  png_set_user_limits(r.png, 0x7fffffffL, 0x7fffffffL);  // our own check gives the clearer message
  png_set_chunk_malloc_max(r.png, 64u << 20);
  png_read_info(r.png, r.info);
  *w = png_get_image_width(r.png, r.info);
  *h = png_get_image_height(r.png, r.info);
  return true;
}

bool png_setup(PngReader& r, int* channels) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  int type = png_get_color_type(r.png, r.info), depth = png_get_bit_depth(r.png, r.info);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r.png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r.png);
  if (png_get_valid(r.png, r.info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r.png);
  if (depth == 16) png_set_strip_16(r.png);  // keeps the high byte, as PIL's "RGB;16B" unpacker
  png_set_interlace_handling(r.png);
  png_read_update_info(r.png, r.info);
  *channels = png_get_channels(r.png, r.info);
  return true;
}

bool png_read_pixels(PngReader& r, png_bytep* rows) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_read_image(r.png, rows);
  png_read_end(r.png, nullptr);
  return true;
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name, int64_t max_pixels) {
  PngReader r;
  r.data = data;
  r.size = size;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_on_error, [](png_structp, png_const_charp) {});
  if (!r.png) fail("image", name + ": out of memory creating the PNG reader");
  r.info = png_create_info_struct(r.png);
  if (!r.info) fail("image", name + ": out of memory creating the PNG reader");
  auto corrupt = [&] { fail("image", name + ": corrupt PNG data (libpng: " + std::string(r.error) + ")"); };
  png_uint_32 w = 0, h = 0;
  if (!png_read_header(r, &w, &h)) corrupt();
  check_dims(w, h, name, max_pixels);  // before allocating anything of the image's size
  int ch = 0;
  if (!png_setup(r, &ch)) corrupt();
  // Deflate expands at most 1032:1 and unpacking (1-bit palette -> RGBA) at most 32:1, so a file
  // this small cannot hold this many pixels: refuse before allocating (a "PNG bomb" header).
  if ((double)w * h * ch > 33024.0 * (double)size + 65536.0)
    fail("image", name + ": corrupt PNG data (" + std::to_string(size) + " bytes cannot hold a " + std::to_string(w) +
                      "x" + std::to_string(h) + " image)");
  Image img;
  img.width = (int)w;
  img.height = (int)h;
  img.channels = ch;
  img.pixels.resize((size_t)w * h * ch);
  std::vector<png_bytep> rows(h);
  for (png_uint_32 y = 0; y < h; y++) rows[y] = img.row((int)y);
  if (!png_read_pixels(r, rows.data())) corrupt();
  if (img.channels == 2) img = convert_image(img, 4);  // gray+alpha: keep the alpha as RGBA
  return img;
}

// --------------------------------------------------------------------------------------- JPEG read
struct JpegReader {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr mgr;
  std::jmp_buf jb;
  char error[JMSG_LENGTH_MAX] = {0};
  bool created = false, truncated = false;
  ~JpegReader() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

void jpeg_on_error(j_common_ptr c) {
  auto* r = (JpegReader*)c->client_data;
  (*c->err->format_message)(c, r->error);
  std::longjmp(r->jb, 1);
}

// Warnings are ignored (as PIL does), except a premature end of data: PIL refuses truncated files.
void jpeg_on_message(j_common_ptr c, int level) {
  auto* r = (JpegReader*)c->client_data;
  if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) r->truncated = true;
}

bool jpeg_header(JpegReader& r, const uint8_t* data, size_t size) {
  r.cinfo.client_data = &r;  // kept by jpeg_create_decompress, needed by its error path
  if (setjmp(r.jb)) return false;
  jpeg_create_decompress(&r.cinfo);
  r.created = true;
  jpeg_mem_src(&r.cinfo, data, (unsigned long)size);
  jpeg_read_header(&r.cinfo, TRUE);
  return true;
}

bool jpeg_start(JpegReader& r, J_COLOR_SPACE out) {
  if (setjmp(r.jb)) return false;
  r.cinfo.out_color_space = out;
  jpeg_start_decompress(&r.cinfo);
  return true;
}

bool jpeg_pixels(JpegReader& r, uint8_t* pixels, size_t stride) {
  if (setjmp(r.jb)) return false;
  while (r.cinfo.output_scanline < r.cinfo.output_height && !r.truncated) {
    JSAMPROW row = pixels + (size_t)r.cinfo.output_scanline * stride;
    jpeg_read_scanlines(&r.cinfo, &row, 1);
  }
  if (!r.truncated) jpeg_finish_decompress(&r.cinfo);
  return true;
}

inline uint8_t muldiv255(int a, int b) {
  int t = a * b + 128;
  return (uint8_t)(((t >> 8) + t) >> 8);
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, int64_t max_pixels) {
  JpegReader r;
  r.cinfo.err = jpeg_std_error(&r.mgr);
  r.mgr.error_exit = jpeg_on_error;
  r.mgr.emit_message = jpeg_on_message;
  r.mgr.output_message = [](j_common_ptr) {};
  auto corrupt = [&] { fail("image", name + ": corrupt JPEG data (libjpeg: " + std::string(r.error) + ")"); };
  if (!jpeg_header(r, data, size)) corrupt();
  check_dims(r.cinfo.image_width, r.cinfo.image_height, name, max_pixels);
  J_COLOR_SPACE src = r.cinfo.jpeg_color_space;
  bool cmyk = src == JCS_CMYK || src == JCS_YCCK;
  int ch = cmyk ? 4 : src == JCS_GRAYSCALE ? 1 : 3;
  if (!jpeg_start(r, cmyk ? JCS_CMYK : ch == 1 ? JCS_GRAYSCALE : JCS_RGB)) corrupt();
  Image img;
  img.width = (int)r.cinfo.output_width;
  img.height = (int)r.cinfo.output_height;
  img.channels = ch;
  if ((int)r.cinfo.output_components != ch) fail("image", name + ": unexpected JPEG component count");
  img.pixels.resize((size_t)img.width * img.height * ch);
  if (!jpeg_pixels(r, img.pixels.data(), (size_t)img.width * ch)) corrupt();
  if (r.truncated) fail("image", name + ": truncated JPEG data (premature end of file)");
  if (cmyk) {
    // PIL: Adobe files store CMYK inverted ("CMYK;I"), then cmyk2rgb: R = nk - nk*C/255, nk = 255 - K.
    bool inverted = r.cinfo.saw_Adobe_marker;
    Image rgb;
    rgb.width = img.width;
    rgb.height = img.height;
    rgb.channels = 3;
    rgb.pixels.resize((size_t)img.width * img.height * 3);
    for (size_t i = 0; i < (size_t)img.width * img.height; i++) {
      uint8_t v[4];
      for (int c = 0; c < 4; c++) v[c] = inverted ? 255 - img.pixels[i * 4 + c] : img.pixels[i * 4 + c];
      int nk = 255 - v[3];
      for (int c = 0; c < 3; c++) rgb.pixels[i * 3 + c] = (uint8_t)std::clamp(nk - muldiv255(v[c], nk), 0, 255);
    }
    return rgb;
  }
  return img;
}

const char* guess_format(const uint8_t* d, size_t n) {
  auto starts = [&](const char* s, size_t off = 0) { return n >= off + std::strlen(s) && std::memcmp(d + off, s, std::strlen(s)) == 0; };
  if (starts("RIFF") && starts("WEBP", 8)) return "WebP";
  if (starts("GIF8")) return "GIF";
  if (starts("BM")) return "BMP";
  if (starts("II*") || starts("MM")) return "TIFF";
  if (starts("ftyp", 4)) return "HEIF/AVIF";
  return nullptr;
}

// ------------------------------------------------------------------------------ EXIF orientation
// Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 when absent or malformed.
int tiff_orientation(const uint8_t* t, size_t n) {
  if (n < 8 || !((t[0] == 'I' && t[1] == 'I') || (t[0] == 'M' && t[1] == 'M'))) return 1;
  const bool le = t[0] == 'I';
  auto u16 = [&](size_t o) -> uint32_t { return le ? t[o] | t[o + 1] << 8 : t[o] << 8 | t[o + 1]; };
  auto u32 = [&](size_t o) -> uint32_t { return le ? u16(o) | u16(o + 2) << 16 : u16(o) << 16 | u16(o + 2); };
  uint32_t ifd = u32(4);
  if (ifd > n - 2) return 1;
  uint32_t count = u16(ifd);
  for (uint32_t i = 0; i < count; i++) {
    size_t e = ifd + 2 + (size_t)12 * i;
    if (e + 12 > n) break;
    if (u16(e) == 0x0112) {
      uint32_t v = u16(e + 2) == 3 ? u16(e + 8) : u16(e + 2) == 4 ? u32(e + 8) : 1;  // SHORT (or LONG)
      return v >= 1 && v <= 8 ? (int)v : 1;
    }
  }
  return 1;
}

int exif_orientation(const uint8_t* d, size_t n, bool png) {
  if (png) {  // eXIf chunk
    for (size_t pos = 8; pos + 12 <= n;) {
      uint32_t len = (uint32_t)d[pos] << 24 | (uint32_t)d[pos + 1] << 16 | (uint32_t)d[pos + 2] << 8 | d[pos + 3];
      if (len > n - pos - 12) break;
      if (std::memcmp(d + pos + 4, "eXIf", 4) == 0) return tiff_orientation(d + pos + 8, len);
      if (std::memcmp(d + pos + 4, "IEND", 4) == 0) break;
      pos += 12 + (size_t)len;
    }
    return 1;
  }
  for (size_t pos = 2; pos + 4 <= n;) {  // JPEG markers up to the first scan: APP1 "Exif\0\0"
    if (d[pos] != 0xFF) break;
    uint8_t m = d[pos + 1];
    if (m == 0xFF) {
      pos++;
      continue;
    }
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      pos += 2;
      continue;
    }
    if (m == 0xDA || m == 0xD9) break;
    size_t len = (size_t)d[pos + 2] << 8 | d[pos + 3];
    if (len < 2 || pos + 2 + len > n) break;
    if (m == 0xE1 && len >= 8 && std::memcmp(d + pos + 4, "Exif\0\0", 6) == 0) return tiff_orientation(d + pos + 10, len - 8);
    pos += 2 + len;
  }
  return 1;
}

// PIL's ImageOps.exif_transpose: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
// 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90.
Image apply_orientation(const Image& in, int o) {
  if (o <= 1 || o > 8) return in;
  const bool swap = o >= 5;
  const int W = in.width, H = in.height, C = in.channels;
  Image out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.channels = C;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; y++)
    for (int x = 0; x < out.width; x++) {
      int sx = x, sy = y;  // source pixel of output (x, y)
      switch (o) {
        case 2: sx = W - 1 - x; break;
        case 3: sx = W - 1 - x, sy = H - 1 - y; break;
        case 4: sy = H - 1 - y; break;
        case 5: sx = y, sy = x; break;
        case 6: sx = y, sy = H - 1 - x; break;
        case 7: sx = W - 1 - y, sy = H - 1 - x; break;
        case 8: sx = W - 1 - y, sy = x; break;
      }
      std::memcpy(out.row(y) + (size_t)x * C, in.row(sy) + (size_t)sx * C, C);
    }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------ public
Image convert_image(const Image& img, int channels) {
  if (channels == 0 || channels == img.channels) return img;
  if (channels != 1 && channels != 3 && channels != 4) fail("image", "cannot convert to " + std::to_string(channels) + " channels");
  if (img.channels < 1 || img.channels > 4) fail("image", "image has " + std::to_string(img.channels) + " channels");
  Image out;
  out.width = img.width;
  out.height = img.height;
  out.channels = channels;
  size_t n = (size_t)img.width * img.height;
  out.pixels.resize(n * channels);
  const int ic = img.channels;
  for (size_t i = 0; i < n; i++) {
    const uint8_t* s = &img.pixels[i * ic];
    uint8_t* d = &out.pixels[i * channels];
    uint8_t r = s[0], g = ic >= 3 ? s[1] : s[0], b = ic >= 3 ? s[2] : s[0];
    uint8_t a = ic == 4 ? s[3] : ic == 2 ? s[1] : 255;
    if (channels == 1) {
      d[0] = ic <= 2 ? r : (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);  // PIL's L24
    } else {
      d[0] = r, d[1] = g, d[2] = b;
      if (channels == 4) d[3] = a;
    }
  }
  return out;
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name, int channels, bool exif_transpose,
                   int64_t max_pixels) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (channels != 0 && channels != 1 && channels != 3 && channels != 4)
    fail("image", name + ": cannot convert to " + std::to_string(channels) + " channels");
  const bool png = size >= 8 && std::memcmp(data, png_sig, 8) == 0;
  if (png || (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)) {
    Image img = png ? decode_png(data, size, name, max_pixels) : decode_jpeg(data, size, name, max_pixels);
    if (exif_transpose) img = apply_orientation(img, exif_orientation(data, size, png));
    return convert_image(img, channels);
  }
  const char* other = guess_format(data, size);
  fail("image", name + ": not a PNG or JPEG image" + (other ? std::string(" (looks like ") + other + ")" : ""));
}

Image read_image(const std::string& path, int channels, bool exif_transpose, int64_t max_pixels) {
  std::vector<uint8_t> bytes = read_all(path);
  return decode_image(bytes.data(), bytes.size(), path, channels, exif_transpose, max_pixels);
}

// --------------------------------------------------------------------------------------- PNG write
namespace {

struct PngWriter {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<uint8_t>* out = nullptr;
  char error[256] = {0};
  ~PngWriter() { png_destroy_write_struct(&png, &info); }
};

void png_write_mem(png_structp p, png_bytep d, size_t n) {
  auto* w = (PngWriter*)png_get_io_ptr(p);
  w->out->insert(w->out->end(), d, d + n);  // bad_alloc here would cross libpng: reserve up front
}

void png_on_write_error(png_structp p, png_const_charp msg) {
  auto* w = (PngWriter*)png_get_error_ptr(p);
  std::snprintf(w->error, sizeof w->error, "%s", msg);
  png_longjmp(p, 1);
}

bool png_encode(PngWriter& w, const Image& img, png_textp text, int ntext, png_bytep* rows) {
  if (setjmp(png_jmpbuf(w.png))) return false;
  png_set_write_fn(w.png, &w, png_write_mem, nullptr);
  int type = img.channels == 4 ? PNG_COLOR_TYPE_RGBA : img.channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY;
  png_set_IHDR(w.png, w.info, img.width, img.height, 8, type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (ntext) png_set_text(w.png, w.info, text, ntext);
  png_write_info(w.png, w.info);
  png_write_image(w.png, rows);
  png_write_end(w.png, nullptr);
  return true;
}

// UTF-8 -> Latin-1 when every code point is <= 0xFF (PIL's value.encode("latin-1")).
bool utf8_to_latin1(const std::string& s, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size(); i++) {
    unsigned char c = s[i];
    if (c < 0x80) {
      *out += (char)c;
    } else if ((c == 0xC2 || c == 0xC3) && i + 1 < s.size() && ((unsigned char)s[i + 1] & 0xC0) == 0x80) {
      *out += (char)(((c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F));
      i++;
    } else {
      return false;
    }
  }
  return true;
}

std::string latin1_to_utf8(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c < 0x80) {
      o += (char)c;
    } else {
      o += (char)(0xC0 | (c >> 6));
      o += (char)(0x80 | (c & 0x3F));
    }
  }
  return o;
}

}  // namespace

std::vector<uint8_t> encode_png(const Image& img, const TextChunks& text, const std::string& name) {
  if (img.channels != 1 && img.channels != 3 && img.channels != 4)
    fail("image", name + ": cannot write a PNG with " + std::to_string(img.channels) + " channels");
  check_dims(img.width, img.height, name);
  if ((size_t)img.width * img.height * img.channels != img.pixels.size())
    fail("image", name + ": pixel buffer size does not match " + std::to_string(img.width) + "x" +
                      std::to_string(img.height) + "x" + std::to_string(img.channels));
  // Chunk payloads, kept alive here (outside the setjmp frame).
  std::vector<std::string> keys(text.size()), vals(text.size());
  std::vector<png_text> chunks(text.size());
  for (size_t i = 0; i < text.size(); i++) {
    const std::string& k = text[i].first;
    if (k.empty() || k.size() > 79 || !utf8_to_latin1(k, &keys[i]) || keys[i].front() == ' ' || keys[i].back() == ' ' ||
        keys[i].find('\0') != std::string::npos)
      fail("image", name + ": invalid PNG text key '" + k + "' (1-79 Latin-1 characters, no leading/trailing spaces)");
    std::memset(&chunks[i], 0, sizeof(png_text));
    chunks[i].key = keys[i].data();
    if (utf8_to_latin1(text[i].second, &vals[i]) && vals[i].find('\0') == std::string::npos) {
      chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;  // tEXt, Latin-1 bytes
      chunks[i].text_length = vals[i].size();
    } else {
      vals[i] = text[i].second;  // iTXt, UTF-8, uncompressed, empty language and translated key
      chunks[i].compression = PNG_ITXT_COMPRESSION_NONE;
      chunks[i].itxt_length = vals[i].size();
      chunks[i].lang = nullptr;
      chunks[i].lang_key = nullptr;
    }
    chunks[i].text = vals[i].data();
  }
  std::vector<png_bytep> rows(img.height);
  for (int y = 0; y < img.height; y++) rows[y] = (png_bytep)img.row(y);
  std::vector<uint8_t> out;
  size_t textbytes = 0;
  for (auto& v : vals) textbytes += v.size() + 96;
  out.reserve(img.pixels.size() + img.pixels.size() / 64 + (size_t)img.height * 6 + textbytes + 4096);
  PngWriter w;
  w.out = &out;
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_on_write_error, [](png_structp, png_const_charp) {});
  if (!w.png) fail("image", name + ": out of memory creating the PNG writer");
  w.info = png_create_info_struct(w.png);
  if (!w.info) fail("image", name + ": out of memory creating the PNG writer");
  if (!png_encode(w, img, chunks.data(), (int)chunks.size(), rows.data()))
    fail("image", name + ": cannot encode PNG (libpng: " + std::string(w.error) + ")");
  return out;
}

void write_png(const std::string& path, const Image& img, const TextChunks& text) {
  std::vector<uint8_t> bytes = encode_png(img, text, path);
  write_file_atomic(path, bytes.data(), bytes.size());
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  namespace fs = std::filesystem;
  fs::path p(path);
  if (p.filename().empty()) fail("image", path + ": cannot write: not a file name");
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  // Unique temporary name in the same folder (same filesystem, so rename is atomic).
  static std::atomic<unsigned> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    tmp = (dir / ("." + p.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                  std::to_string(counter.fetch_add(1))))
              .string();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) fail("image", path + ": cannot write: " + std::strerror(errno));
  int err = 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, bytes + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : ENOSPC;
      break;
    }
    done += (size_t)n;
  }
  if (!err && ::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;  // delayed ENOSPC shows here
  if (::close(fd) != 0 && !err && errno != EINTR) err = errno;
  if (!err && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    fail("image", path + ": cannot write: " + std::strerror(err));
  }
}

// ---------------------------------------------------------------------------------------- PNG text
namespace {

bool inflate_text(const char* d, size_t n, std::string* out) {
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  if (inflateInit(&zs) != Z_OK) return false;
  zs.next_in = (Bytef*)d;
  zs.avail_in = (uInt)n;
  char buf[16384];
  int rc = Z_OK;
  out->clear();
  while (rc == Z_OK) {
    zs.next_out = (Bytef*)buf;
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out->append(buf, sizeof buf - zs.avail_out);
    if (out->size() > (64u << 20)) rc = Z_MEM_ERROR;  // a decompression bomb
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;
  }
  inflateEnd(&zs);
  return rc == Z_STREAM_END;
}

}  // namespace

TextChunks png_text_from_memory(const uint8_t* data, size_t size, const std::string& name) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (size < 8 || std::memcmp(data, png_sig, 8) != 0) fail("image", name + ": not a PNG image");
  TextChunks out;
  size_t pos = 8;
  while (pos + 12 <= size) {
    uint32_t len = (uint32_t)data[pos] << 24 | (uint32_t)data[pos + 1] << 16 | (uint32_t)data[pos + 2] << 8 | data[pos + 3];
    std::string type((const char*)data + pos + 4, 4);
    if (len > size - pos - 12) fail("image", name + ": corrupt PNG data (chunk '" + type + "' extends past end of file)");
    std::string body((const char*)data + pos + 8, len);
    size_t z = body.find('\0');
    if ((type == "tEXt" || type == "zTXt" || type == "iTXt") && z != std::string::npos && z > 0) {
      std::string key = latin1_to_utf8(body.substr(0, z)), val;
      bool ok = true;
      if (type == "tEXt") {
        val = latin1_to_utf8(body.substr(z + 1));
      } else if (type == "zTXt") {
        ok = z + 2 <= body.size() && inflate_text(body.data() + z + 2, body.size() - z - 2, &val);
        val = latin1_to_utf8(val);
      } else if (z + 3 <= body.size()) {  // iTXt: flag, method, language\0, translated key\0, text
        bool compressed = body[z + 1] != 0;
        size_t lang = body.find('\0', z + 3);
        size_t tkey = lang == std::string::npos ? lang : body.find('\0', lang + 1);
        if (tkey == std::string::npos) ok = false;
        else if (compressed) ok = inflate_text(body.data() + tkey + 1, body.size() - tkey - 1, &val);
        else val = body.substr(tkey + 1);
      } else {
        ok = false;
      }
      if (!ok) fail("image", name + ": corrupt PNG data (bad " + type + " chunk '" + key + "')");
      out.emplace_back(std::move(key), std::move(val));
    }
    if (type == "IEND") break;
    pos += 12 + (size_t)len;
  }
  return out;
}

TextChunks read_png_text(const std::string& path) {
  std::vector<uint8_t> bytes = read_all(path);
  return png_text_from_memory(bytes.data(), bytes.size(), path);
}

// ------------------------------------------------------------------------------------------ tensor
namespace {

Tensor to_tensor(const Image& img0, bool signed_range) {
  Image img = convert_image(img0, 3);
  int64_t H = img.height, W = img.width;
  Tensor t = Tensor::empty({1, 3, H, W});  // [1, 3, H, W]
  float* p = t.f32();
  for (int64_t c = 0; c < 3; c++)
    for (int64_t i = 0; i < H * W; i++) {
      float x = (float)img.pixels[i * 3 + c] / 255.0f;  // numpy: uint8 -> float32, / 255.0 in float32
      p[c * H * W + i] = signed_range ? 2.0f * x - 1.0f : x;
    }
  return t;
}

Image from_tensor(const Tensor& t0, int64_t index, bool signed_range) {
  if (t0.dim() != 4 || t0.size(1) != 3 || index < 0 || index >= t0.size(0))
    fail("image", "expected a [B, 3, H, W] tensor with image " + std::to_string(index) + ", got " + t0.str());
  Tensor t = t0.dtype() == DType::F32 ? t0 : t0.to(DType::F32);
  Image img;
  img.height = (int)t.size(2);
  img.width = (int)t.size(3);
  img.channels = 3;
  check_dims(img.width, img.height, "tensor");
  int64_t HW = (int64_t)img.width * img.height;
  img.pixels.resize(HW * 3);
  const float* p = t.f32() + index * 3 * HW;
  for (int64_t c = 0; c < 3; c++)
    for (int64_t i = 0; i < HW; i++) {
      float v = p[c * HW + i];
      if (signed_range) v = v / 2.0f + 0.5f;  // torch float32: (image / 2 + 0.5)
      if (std::isnan(v)) v = 0.0f;
      v = std::clamp(v, 0.0f, 1.0f) * 255.0f;                   // numpy float32 multiply
      img.pixels[i * 3 + c] = (uint8_t)std::nearbyint(v);       // np.round: half to even
    }
  return img;
}

}  // namespace

Tensor image_to_tensor(const Image& img) { return to_tensor(img, true); }
Tensor image_to_tensor01(const Image& img) { return to_tensor(img, false); }
Image tensor01_to_image(const Tensor& t, int64_t index) { return from_tensor(t, index, false); }
Image tensor_to_image(const Tensor& t, int64_t index) { return from_tensor(t, index, true); }

}  // namespace easel
