// Fuzz target: the safetensors parser on arbitrary bytes. Malformed input must end in an
// easel::Error; any other exception, crash or sanitizer report is a finding.
// Seeds: fuzz/corpus/fuzz_safetensors (fuzz/corpus/gen_corpus.py).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <unistd.h>

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

namespace {
// Whatever parses must survive save_safetensors + load_safetensors unchanged (tmpfs file).
void round_trip(const easel::WeightStore& ws) {
  static const std::string path = std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                                  "/easel_fuzz_rt_" + std::to_string(getpid()) + ".safetensors";
  easel::save_safetensors(path, ws.tensors, ws.metadata);
  easel::WeightStore back = easel::load_safetensors(path);
  std::remove(path.c_str());
  bool same = back.tensors.size() == ws.tensors.size() && back.metadata == ws.metadata;
  for (auto& [k, t] : ws.tensors) {
    auto it = back.tensors.find(k);
    same = same && it != back.tensors.end() && it->second.dtype() == t.dtype() && it->second.shape() == t.shape() &&
           std::memcmp(it->second.raw(), t.raw(), t.nbytes()) == 0;
  }
  if (!same) {
    std::fprintf(stderr, "safetensors round trip changed the tensors or metadata\n");
    std::abort();
  }
}
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
    round_trip(ws);
    ++stats.ok;
  } catch (const easel::Error&) {
    ++stats.rejected;
  }
  return 0;
}
