// Fuzz target: PNG/JPEG decoding, PNG text chunks and the A1111 infotext parser on arbitrary
// bytes. Malformed input must end in an easel::Error; any other exception, crash, leak or
// sanitizer report is a finding. Whatever decodes must survive encode_png + decode unchanged.
// Seeds: fuzz/corpus/fuzz_image (tools/gen_image_fixtures.py).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "io/image.h"
#include "pipeline/params_text.h"

namespace {
struct Stats {
  unsigned long ok = 0, rejected = 0;
  ~Stats() {
    if (std::getenv("EASEL_FUZZ_STATS")) std::fprintf(stderr, "image: %lu decoded, %lu rejected\n", ok, rejected);
  }
} stats;

// Declared size from the PNG IHDR or the first JPEG SOF, so that mutated headers asking for
// hundreds of megapixels (legal up to 2^28) don't make every run allocate gigabytes.
int64_t declared_pixels(const uint8_t* d, size_t n) {
  if (n >= 24 && d[0] == 0x89 && std::memcmp(d + 12, "IHDR", 4) == 0)
    return (int64_t)(d[16] << 24 | d[17] << 16 | d[18] << 8 | d[19]) * (d[20] << 24 | d[21] << 16 | d[22] << 8 | d[23]);
  for (size_t i = 2; i + 9 < n; i++)
    if (d[i] == 0xFF && d[i + 1] >= 0xC0 && d[i + 1] <= 0xCF && d[i + 1] != 0xC4 && d[i + 1] != 0xC8 && d[i + 1] != 0xCC)
      return (int64_t)(d[i + 5] << 8 | d[i + 6]) * (d[i + 7] << 8 | d[i + 8]);
  return 0;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)easel::parse_a1111_parameters(std::string((const char*)data, size));
  } catch (const easel::Error&) {
  }
  if (declared_pixels(data, size) > (int64_t(1) << 22)) return 0;
  try {
    (void)easel::png_text_from_memory(data, size, "fuzz.png");
  } catch (const easel::Error&) {
  }
  try {
    easel::Image img = easel::decode_image(data, size, "fuzz", 0);
    std::vector<uint8_t> png = easel::encode_png(img, {{"parameters", "fuzz"}});
    easel::Image back = easel::decode_image(png.data(), png.size(), "fuzz-rt", 0);
    if (back.width != img.width || back.height != img.height || back.channels != img.channels || back.pixels != img.pixels) {
      std::fprintf(stderr, "image: PNG round trip changed the pixels\n");
      std::abort();
    }
    ++stats.ok;
  } catch (const easel::Error&) {
    ++stats.rejected;
  }
  return 0;
}
