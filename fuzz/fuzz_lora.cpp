// Fuzz target: LoRA files (lora::read_lora) on arbitrary bytes against the tiny SD1 model, then
// merging/unmerging and the bypass on whatever reads. Malformed input must end in an easel::Error;
// any other exception, crash or sanitizer report is a finding, and unmerge must restore the weights.
// Seeds: fuzz/corpus/fuzz_lora (small fixture LoRAs of each format).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/checkpoint.h"
#include "lora/lora_apply.h"
#include "lora/lora_bypass.h"

namespace {
const easel::Checkpoint& model() {
  static const easel::Checkpoint ck = easel::open_checkpoint(EASEL_FIXTURES "/sd1/diffusers");
  return ck;
}
const std::string& path() {
  static const std::string p = std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/easel_fuzz_lora_" +
                               std::to_string(getpid()) + ".safetensors";
  return p;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream f(path(), std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), (std::streamsize)size);
  }
  try {
    easel::lora::LoraSpec s{easel::lora::read_lora(path(), model()), 0.7f, -0.5f};
    easel::Checkpoint ck = model();  // shares the tensors; merging swaps the copy's slots only
    easel::lora::Merger mg;
    mg.merge(ck, {s});
    mg.unmerge(ck);
    for (auto& [k, t] : ck.unet.tensors)
      if (t.raw() != model().unet.get(k).raw()) {
        std::fprintf(stderr, "unmerge did not restore %s\n", k.c_str());
        std::abort();
      }
    easel::lora::Bypasser bp;
    bp.apply(ck, {s});
  } catch (const easel::Error&) {
  }
  std::remove(path().c_str());
  return 0;
}
