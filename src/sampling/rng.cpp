// Reference: torch aten/src/ATen/core/MT19937RNGEngine.h, CPUGeneratorImpl.cpp,
// aten/src/ATen/core/{DistributionsHelper,TransformationHelper}.h,
// aten/src/ATen/native/cpu/DistributionTemplates.h; A1111 modules/rng_philox.py.
//
// Bit-exactness depends on the rounding of every step, so floating-point contraction into FMA
// (GCC's default in gnu++ mode with -march=native) is turned off for this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif
#include "sampling/rng.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace easel {

Rng::~Rng() = default;

// ---------------------------------------------------------------------------------------------
// torch CPU generator

TorchCpuRng::TorchCpuRng(uint64_t seed, Variant variant) : variant_(variant) {
  // at::mt19937::init_with_uint32: the 64-bit seed is truncated to its low 32 bits.
  state_[0] = (uint32_t)(seed & 0xffffffffu);
  for (uint32_t j = 1; j < 624; j++)
    state_[j] = 1812433253u * (state_[j - 1] ^ (state_[j - 1] >> 30)) + j;
  index_ = 624;
}

void TorchCpuRng::twist() {
  constexpr uint32_t kUpper = 0x80000000u, kLower = 0x7fffffffu, kMatrixA = 0x9908b0dfu;
  for (int i = 0; i < 624; i++) {
    uint32_t y = (state_[i] & kUpper) | (state_[(i + 1) % 624] & kLower);
    state_[i] = state_[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
  }
  index_ = 0;
}

uint32_t TorchCpuRng::random() {
  if (index_ >= 624) twist();
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t TorchCpuRng::random64() {
  uint32_t hi = random();
  uint32_t lo = random();
  return ((uint64_t)hi << 32) | lo;
}

// at::uniform_real_distribution<float>(0, 1): low 24 bits of one 32-bit draw times 2^-24.
static inline float uniform_float(TorchCpuRng& g) {
  return (float)(g.random() & ((1u << 24) - 1)) * (1.0f / (float)(1u << 24));
}

// at::normal_distribution<double>(0, 1): Box-Muller on two 53-bit uniforms; returns r*cos and
// caches r*sin in the generator for the next call.
double TorchCpuRng::normal_double() {
  if (has_next_double_) {
    has_next_double_ = false;
    return next_double_;
  }
  constexpr uint64_t kMask = (1ull << 53) - 1;
  constexpr double kDiv = 1.0 / (double)(1ull << 53);
  double u1 = (double)(random64() & kMask) * kDiv;
  double u2 = (double)(random64() & kMask) * kDiv;
  double r = std::sqrt(-2.0 * std::log1p(-u2));
  double theta = 2.0 * M_PI * u1;
  next_double_ = r * std::sin(theta);
  has_next_double_ = true;
  return r * std::cos(theta);
}

// normal_fill_16 (torch's scalar path, ATEN_CPU_CAPABILITY=default, e.g. ARM): Box-Muller pairs
// (j, j+8) over 16 uniforms, in float with libm.
static void normal_fill_16_scalar(float* d) {
  for (int j = 0; j < 8; j++) {
    const float u1 = 1 - d[j];  // [0, 1) -> (0, 1] for log
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2 * std::log(u1));
    const float theta = (float)(2.0f * M_PI * u2);  // computed in double, stored as float
    d[j] = radius * std::cos(theta);
    d[j + 8] = radius * std::sin(theta);
  }
}

// normal_fill_16_AVX2 (torch on x86 with AVX2 or AVX512): Cephes-style log256_ps / sincos256_ps
// from aten/src/ATen/native/cpu/avx_mathfun.h, emulated lane by lane. torch's binary is built by
// GCC with -mfma and default contraction, which fuses each mul feeding an add/sub into one FMA;
// fma() below marks exactly those places (verified bit-exact against torch 2.15).
static inline float bits_f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t f_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

static float log_avx(float x) {
  constexpr float p0 = 7.0376836292E-2f, p1 = -1.1514610310E-1f, p2 = 1.1676998740E-1f,
                  p3 = -1.2420140846E-1f, p4 = +1.4249322787E-1f, p5 = -1.6668057665E-1f,
                  p6 = +2.0000714765E-1f, p7 = -2.4999993993E-1f, p8 = +3.3333331174E-1f,
                  q1 = -2.12194440e-4f, q2 = 0.693359375f, sqrthf = (float)0.707106781186547524;
  const bool invalid = x <= 0.0f;
  x = std::max(x, bits_f(0x00800000u));  // _mm256_max_ps(x, min_norm_pos) returns x unless x < min
  int32_t imm0 = (int32_t)(f_bits(x) >> 23);
  x = bits_f((f_bits(x) & ~0x7f800000u) | f_bits(0.5f));
  imm0 -= 0x7f;
  float e = (float)imm0;
  e = e + 1.0f;
  const bool mask = x < sqrthf;
  float tmp = mask ? x : 0.0f;
  x = x - 1.0f;
  e = e - (mask ? 1.0f : 0.0f);
  x = x + tmp;
  float z = x * x;
  float y = std::fma(p0, x, p1);
  y = std::fma(y, x, p2);
  y = std::fma(y, x, p3);
  y = std::fma(y, x, p4);
  y = std::fma(y, x, p5);
  y = std::fma(y, x, p6);
  y = std::fma(y, x, p7);
  y = std::fma(y, x, p8);
  y = y * x;
  y = std::fma(y, z, e * q1);
  y = std::fma(-z, 0.5f, y);
  x = std::fma(e, q2, x + y);
  return invalid ? bits_f(f_bits(x) | 0xffffffffu) : x;
}

static void sincos_avx(float x, float* s, float* c) {
  constexpr float dp1 = -0.78515625f, dp2 = -2.4187564849853515625e-4f,
                  dp3 = -3.77489497744594108e-8f, sp0 = -1.9515295891E-4f, sp1 = 8.3321608736E-3f,
                  sp2 = -1.6666654611E-1f, cp0 = 2.443315711809948E-005f,
                  cp1 = -1.388731625493765E-003f, cp2 = 4.166664568298827E-002f,
                  fopi = (float)1.27323954473516;
  uint32_t sign_sin = f_bits(x) & 0x80000000u;
  x = bits_f(f_bits(x) & 0x7fffffffu);
  float y = x * fopi;
  int32_t j = (int32_t)y;  // cvttps: truncation
  j = (j + 1) & ~1;
  y = (float)j;
  uint32_t swap_sin = (uint32_t)(j & 4) << 29;
  const bool poly = (j & 2) == 0;
  x = std::fma(y, dp1, x);
  x = std::fma(y, dp2, x);
  x = std::fma(y, dp3, x);
  uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
  sign_sin ^= swap_sin;
  float z = x * x;
  float yc = std::fma(cp0, z, cp1);
  yc = std::fma(yc, z, cp2);
  yc = yc * z;
  yc = std::fma(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;
  float ys = std::fma(sp0, z, sp1);
  ys = std::fma(ys, z, sp2);
  ys = ys * z;
  ys = std::fma(ys, x, x);
  float ysin2 = poly ? ys : 0.0f, ysin1 = poly ? 0.0f : yc;
  ys = ys - ysin2;
  yc = yc - ysin1;
  *s = bits_f(f_bits(ysin1 + ysin2) ^ sign_sin);
  *c = bits_f(f_bits(yc + ys) ^ sign_cos);
}

static void normal_fill_16_avx2(float* d) {
  const float two_pi = (float)(2.0f * M_PI);
  for (int j = 0; j < 8; j++) {
    const float u1 = 1.0f - d[j];
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2.0f * log_avx(u1));
    float s, c;
    sincos_avx(two_pi * u2, &s, &c);
    d[j] = std::fma(radius * c, 1.0f, 0.0f);  // _mm256_fmadd_ps(n, std, mean)
    d[j + 8] = std::fma(radius * s, 1.0f, 0.0f);
  }
}

void TorchCpuRng::randn(float* out, int64_t n) {
  if (n >= 16) {  // torch's normal_fill (contiguous float tensors)
    auto fill16 = variant_ == Variant::Avx2 ? normal_fill_16_avx2 : normal_fill_16_scalar;
    for (int64_t i = 0; i < n; i++) out[i] = uniform_float(*this);
    for (int64_t i = 0; i + 16 <= n; i += 16) fill16(out + i);
    if (n % 16 != 0) {  // recompute the last 16 values from fresh uniforms
      float* d = out + n - 16;
      for (int i = 0; i < 16; i++) d[i] = uniform_float(*this);
      fill16(d);
    }
  } else {
    for (int64_t i = 0; i < n; i++) out[i] = (float)normal_double();
  }
}

void TorchCpuRng::rand(float* out, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = uniform_float(*this);
}

Tensor TorchCpuRng::randn(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::F32);
  randn(t.f32(), t.numel());
  return t;
}

// ---------------------------------------------------------------------------------------------
// A1111 Philox

void PhiloxRng::philox(uint32_t offset, uint32_t index, uint64_t seed, uint32_t out[2]) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c[4] = {offset, 0, index, 0};
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint64_t v1 = (uint64_t)c[0] * kM0, v2 = (uint64_t)c[2] * kM1;
    uint32_t n0 = (uint32_t)(v2 >> 32) ^ c[1] ^ k0;
    uint32_t n1 = (uint32_t)v2;
    uint32_t n2 = (uint32_t)(v1 >> 32) ^ c[3] ^ k1;
    uint32_t n3 = (uint32_t)v1;
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
  }
  out[0] = c[0];
  out[1] = c[1];
}

void PhiloxRng::randn(float* out, int64_t n) {
  // The reference multiplies uint32 by float32 constants in numpy, which promotes to float64.
  const double inv = (double)2.3283064e-10f;
  const double inv_2pi = (double)(float)(2.3283064e-10 * 6.2831855);
  for (int64_t i = 0; i < n; i++) {
    uint32_t g[2];
    philox(offset_, (uint32_t)i, seed_, g);
    double u = (double)g[0] * inv + inv / 2;
    double v = (double)g[1] * inv_2pi + inv_2pi / 2;
    double s = std::sqrt(-2.0 * std::log(u));
    out[i] = (float)(s * std::sin(v));
  }
  offset_++;
}

Tensor PhiloxRng::randn(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::F32);
  randn(t.f32(), t.numel());
  return t;
}

std::unique_ptr<Rng> make_rng(const std::string& kind, uint64_t seed) {
  if (kind == "torch-cpu" || kind == "cpu") return std::make_unique<TorchCpuRng>(seed);
  if (kind == "torch-cpu-scalar")
    return std::make_unique<TorchCpuRng>(seed, TorchCpuRng::Variant::Scalar);
  if (kind == "philox" || kind == "gpu" || kind == "nv") return std::make_unique<PhiloxRng>(seed);
  fail("rng", "unknown rng kind '" + kind + "' (expected torch-cpu, torch-cpu-scalar or philox)");
}

}  // namespace easel
