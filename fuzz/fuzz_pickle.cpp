// Fuzz target: torch checkpoints on arbitrary bytes. Inputs starting with "PK" go through the
// whole zip reader (parse_torch_zip); anything else is run as data.pkl through the restricted
// pickle VM with synthetic storages. Malformed or refused input must end in an easel::Error;
// any other exception, crash or sanitizer report is a finding.
// Seeds: fuzz/corpus/fuzz_pickle (fuzz/corpus/gen_corpus.py).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "io/pickle.h"
#include "io/torch_zip.h"

namespace {

void touch(const easel::WeightStore& ws) {
  volatile uint8_t sum = 0;
  for (auto& [key, t] : ws.tensors) {
    const uint8_t* p = static_cast<const uint8_t*>(t.raw());
    for (size_t i = 0; i < t.nbytes(); ++i) sum = sum + p[i];
  }
}

}  // namespace

namespace {
// EASEL_FUZZ_STATS=1 prints how many inputs parsed vs were rejected (is the fuzzer getting deep?).
struct Stats {
  unsigned long ok = 0, rejected = 0;
  ~Stats() {
    if (std::getenv("EASEL_FUZZ_STATS")) std::fprintf(stderr, "pickle: %lu parsed, %lu rejected\n", ok, rejected);
  }
} stats;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
      touch(easel::parse_torch_zip(data, size, "fuzz.ckpt"));  // storages copied
      // Stored entries viewed in place (central-directory offsets); the owner is a stand-in.
      touch(easel::parse_torch_zip(data, size, "fuzz.ckpt", std::make_shared<int>(0)));
    } else {
      // Storages: exactly the bytes asked for (a sanitizer sees reads past them), patterned.
      easel::StorageLoader load = [](const std::string& key, size_t nbytes) {
        if (nbytes > (16u << 20)) {
          std::string msg = "storage '";  // (built with += : GCC 12 -Wrestrict false positive on a + b + c)
          msg += key;
          msg += "' too large for the fuzzer";
          easel::fail("fuzz", msg);
        }
        auto buf = std::make_shared<std::vector<uint8_t>>(nbytes);
        for (size_t i = 0; i < nbytes; ++i) (*buf)[i] = (uint8_t)(i * 37 + key.size());
        easel::TorchStorage s;
        s.data = buf->data();
        s.nbytes = nbytes;
        s.owner = buf;
        return s;
      };
      touch(easel::unpickle_state_dict(data, size, load, "fuzz/data.pkl"));
    }
    ++stats.ok;
  } catch (const easel::Error&) {
    ++stats.rejected;
  }
  return 0;
}
