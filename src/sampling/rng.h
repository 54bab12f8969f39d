// Seeded normal noise that reproduces the reference frameworks bit for bit.
//
//  "torch-cpu": torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)), float32,
//     across successive calls on one generator (diffusers draws the initial latents, then the
//     ancestral noise of each step from the same generator). mt19937 + torch's CPU normal_ kernel:
//     https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/cpu/DistributionTemplates.h
//     (normal_fill for numel >= 16, normal_distribution<double> with its cached second sample below).
//     torch uses one of two kernels for numel >= 16: on x86 with AVX2/AVX512 Cephes-style
//     log/sincos (avx_mathfun.h) -- "torch-cpu"; elsewhere (ARM, ATEN_CPU_CAPABILITY=default)
//     libm logf/sinf/cosf -- "torch-cpu-scalar" (bit-exact only where libm matches glibc's).
//  "philox": A1111's GPU noise (Philox4x32-10 + Box-Muller, as torch CUDA randn), port of
//     https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/rng_philox.py
//     Each randn call uses counter offset 0, 1, 2, ... like the reference Generator.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace easel {

class Rng {
 public:
  virtual ~Rng();
  // New f32 tensor of standard normal samples.
  virtual Tensor randn(const Shape& shape) = 0;
  // Same, written into out[0..n).
  virtual void randn(float* out, int64_t n) = 0;
};

// kind: "torch-cpu" | "torch-cpu-scalar" | "philox". Throws easel::Error for an unknown kind.
std::unique_ptr<Rng> make_rng(const std::string& kind, uint64_t seed);

// torch's CPU generator (at::mt19937 + CPUGeneratorImpl), exposed for tests.
class TorchCpuRng : public Rng {
 public:
  // Avx2: torch's kernel on x86 CPUs with AVX2/AVX512 (the usual case). Scalar: torch's
  // portable kernel (ATEN_CPU_CAPABILITY=default, ARM builds), using libm log/sin/cos.
  enum class Variant { Avx2, Scalar };
  explicit TorchCpuRng(uint64_t seed, Variant variant = Variant::Avx2);
  Tensor randn(const Shape& shape) override;
  void randn(float* out, int64_t n) override;
  void rand(float* out, int64_t n);  // torch.rand (uniform [0, 1), float32)
  uint32_t random();    // CPUGeneratorImpl::random: one mt19937 draw
  uint64_t random64();  // two draws, first in the high half

 private:
  Variant variant_;
  uint32_t state_[624];
  int index_ = 624;
  bool has_next_double_ = false;  // normal_distribution<double>'s cached sin() sample
  double next_double_ = 0;
  void twist();
  double normal_double();
};

class PhiloxRng : public Rng {
 public:
  explicit PhiloxRng(uint64_t seed) : seed_(seed) {}
  Tensor randn(const Shape& shape) override;
  void randn(float* out, int64_t n) override;
  // Philox4x32-10 on counter {offset, 0, index, 0} and key = seed; returns words 0 and 1.
  static void philox(uint32_t offset, uint32_t index, uint64_t seed, uint32_t out[2]);

 private:
  uint64_t seed_;
  uint32_t offset_ = 0;
};

}  // namespace easel
