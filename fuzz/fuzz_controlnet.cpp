// Fuzz target: ControlNet files (load_controlnet) on arbitrary bytes, in both key layouts, with no base
// model and against the tiny SD1 model; whatever loads runs one forward. Malformed input must end in an
// easel::Error; any other exception, crash or sanitizer report is a finding.
// Seeds: fuzz/corpus/fuzz_controlnet (micro ControlNets, lllyasviel and diffusers keys; tools/fixtures/controlnet.py).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "control/controlnet.h"
#include "core/error.h"
#include "io/checkpoint.h"

namespace {
const easel::ModelConfig& sd1() {
  static const easel::ModelConfig c = easel::open_checkpoint(EASEL_FIXTURES "/sd1/diffusers").config;
  return c;
}
const std::string& path() {
  static const std::string p = std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/easel_fuzz_cn_" +
                               std::to_string(getpid()) + ".safetensors";
  return p;
}
void run(const easel::ControlNetModel& m) {
  const easel::UNetConfig& u = m.config.unet;
  if (u.block_out_channels.size() > 4 || u.block_out_channels[0] > 256) return;  // keep each run small
  const int64_t f = int64_t(1) << (m.config.conditioning_embedding_out_channels.size() - 1);
  const int64_t h = int64_t(1) << (u.block_out_channels.size() - 1);
  if (f > 16) return;
  easel::Tensor guide = easel::Tensor::zeros({1, m.config.conditioning_channels, h * f, h * f});
  easel::Tensor emb = m.embed_condition(guide);
  easel::Tensor x = easel::Tensor::zeros({1, u.in_channels, h, h});
  easel::Tensor ctx = easel::Tensor::zeros({1, 2, u.cross_attention_dim});
  easel::Tensor te, ids;
  if (!u.addition_embed_type.empty()) return;  // SDXL added conditioning needs the base's dims
  (void)m.forward(x, {1.0f}, ctx, emb);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream f(path(), std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), (std::streamsize)size);
  }
  try {
    run(easel::load_controlnet(path()));
  } catch (const easel::Error&) {
  }
  try {
    (void)easel::load_controlnet(path(), &sd1());
  } catch (const easel::Error&) {
  }
  std::remove(path().c_str());
  return 0;
}
