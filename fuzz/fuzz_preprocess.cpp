// Fuzz target: the classical preprocessors (src/preprocess) on arbitrary small images, names,
// resolutions and parameter values. Bad names/values must end in an easel::Error; any other
// exception, crash or sanitizer report is a finding, and every result must be a well-formed RGB guide.
// Input layout: [0] preprocessor index, [1] resolution byte (64 + 4*b; 255 = out of range),
// [2] width-1 (mod 48), [3] height-1 (mod 48), [4] channels selector, [5] parameter count,
// then per parameter: 1 byte (which one; 255 = an unknown key) + 8 bytes (double, may be NaN),
// [..] 8 bytes seed, then pixels (repeated to fill the image).
// Seeds: fuzz/corpus/fuzz_preprocess.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "core/error.h"
#include "preprocess/preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  const auto& list = easel::preprocessors();
  size_t pos = 0;
  auto byte = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
  const uint8_t which = byte();
  std::string name = which < list.size() * 4 ? list[which % list.size()].name : "no_such_preprocessor";
  const uint8_t rb = byte();
  const int res = rb == 255 ? 5000 : 64 + 4 * rb;  // up to 1084: keeps one run short
  easel::Image img;
  img.width = 1 + byte() % 48;
  img.height = 1 + byte() % 48;
  const int chs[4] = {1, 3, 4, 3};
  img.channels = chs[byte() % 4];
  std::map<std::string, double> params;
  const int np = byte() % 4;
  const auto& info = which < list.size() * 4 ? list[which % list.size()] : list[0];
  for (int i = 0; i < np; i++) {
    const uint8_t k = byte();
    double v = 0;
    if (pos + 8 <= size) std::memcpy(&v, data + pos, 8), pos += 8;
    std::string key = k == 255 || info.params.empty() ? "bogus" : info.params[k % info.params.size()].name;
    params[key] = v;
  }
  uint64_t seed = 0;
  if (pos + 8 <= size) std::memcpy(&seed, data + pos, 8), pos += 8;
  img.pixels.resize((size_t)img.width * img.height * img.channels);
  for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = pos < size ? data[pos + i % (size - pos)] : (uint8_t)i;
  try {
    easel::Image out = easel::preprocess(name, img, res, params, seed);
    if (out.channels != 3 || out.width <= 0 || out.height <= 0 ||
        out.pixels.size() != (size_t)out.width * out.height * 3) {
      std::fprintf(stderr, "preprocess: malformed guide from %s\n", name.c_str());
      std::abort();
    }
  } catch (const easel::Error&) {
  }
  return 0;
}
