// Private helpers shared by the CPU backend files: vectorizable exp, f32<->bf16 conversion.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/tensor.h"

namespace easel::ops::cpu {

// exp(x) for f32, branch-free so loops over it vectorize (AVX-512 under -march=native).
// Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-7 Taylor polynomial
// (truncation error < 2e-9 relative on that interval); max error ~2 ulp, matches std::exp to
// ~2.4e-7 relative. Flushes to 0 below -87.3 (no denormals), saturates at exp(88.3) ~ 2e38.
inline float exp_f(float x0) {
  float x = x0 < -87.3f ? -87.3f : (x0 > 88.3f ? 88.3f : x0);
  float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693145751953125f;  // ln2 split into exact high part
  r = r - n * 1.42860682030941723e-6f;   // and low part
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t e = ((int32_t)n + 127) << 23;
  float s;
  std::memcpy(&s, &e, 4);
  float y = p * s;
  return x0 < -87.3f ? 0.f : y;
}

// GELU, erf form: 0.5 x (1 + erf(x/sqrt2)), branch-free and vectorizable. erfc(z), z >= 0, from
// Numerical Recipes' Chebyshev fit (fractional error < 1.2e-7 everywhere):
// erfc(z) = t exp(-z^2 - 1.26551223 + t(1.00002368 + ...)), t = 1/(1 + z/2).
// For x < 0, 1 + erf(u) = erfc(|u|) keeps the tail's relative accuracy.
inline float gelu_f(float x) {
  float z = std::fabs(x) * 0.70710678118654752f;
  float t = 1.f / (1.f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  float erfc = t * exp_f(-z * z + p);
  return 0.5f * x * (x < 0.f ? erfc : 2.f - erfc);
}

// f32 -> bf16 bits, round to nearest even (finite inputs; NaN stays NaN-ish).
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

// Parallel bulk conversions.
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);
// Converted copy of a float tensor's data as f32 / bf16 (src may be f32/f16/bf16).
void any_to_f32(const Tensor& src, float* dst);
void any_to_bf16(const Tensor& src, uint16_t* dst);

inline void check_f32(const Tensor& x, const char* op) {
  if (x.dtype() != DType::F32) fail(op, "expected f32 activations, got " + x.str());
}

}  // namespace easel::ops::cpu
