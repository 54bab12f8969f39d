// Fuzz target: the safetensors parser on arbitrary bytes. Malformed input must end in an
// easel::Error; any other exception, crash or sanitizer report is a finding.
// Seeds: fuzz/corpus/fuzz_safetensors (fuzz/corpus/gen_corpus.py).
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "io/safetensors.h"

namespace {
// EASEL_FUZZ_STATS=1 prints how many inputs parsed vs were rejected (is the fuzzer getting deep?).
struct Stats {
  unsigned long ok = 0, rejected = 0;
  ~Stats() {
    if (std::getenv("EASEL_FUZZ_STATS")) std::fprintf(stderr, "safetensors: %lu parsed, %lu rejected\n", ok, rejected);
  }
} stats;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    easel::WeightStore ws = easel::parse_safetensors(data, size, nullptr, "fuzz.safetensors");
    // Read every byte of every tensor: a view past the input shows up under the sanitizer.
    volatile uint8_t sum = 0;
    for (auto& [key, t] : ws.tensors) {
      const uint8_t* p = static_cast<const uint8_t*>(t.raw());
      for (size_t i = 0; i < t.nbytes(); ++i) sum = sum + p[i];
      if (t.dtype() == easel::DType::F16 || t.dtype() == easel::DType::BF16) (void)t.to(easel::DType::F32);
    }
    ++stats.ok;
  } catch (const easel::Error&) {
    ++stats.rejected;
  }
  return 0;
}
