// Reference CPU backend: straightforward kernels on OpenBLAS sgemm + OpenMP.
// Correctness baseline (ops::ref::*); the fast paths (dnnl_cpu.cpp, attention_cpu.cpp,
// norm_cpu.cpp) live beside it and tests/test_ops.cpp checks them against it.
// Also holds the simple elementwise/layout ops, which are memory-bound and already fine.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu/cpu_util.h"
#include "ops/ops.h"

namespace easel::ops {

// f32 view of a weight (converted copy for f16/bf16).
static Tensor as_f32(const Tensor& t) { return t.dtype() == DType::F32 ? t : t.to(DType::F32); }

static void check_f32(const Tensor& x, const char* op) {
  if (x.dtype() != DType::F32) fail(op, "expected f32 activations, got " + x.str());
}

Tensor ref::linear(const Tensor& x, const Tensor& w_, const Tensor& b_) {
  check_f32(x, "linear");
  if (w_.dim() != 2 || x.size(-1) != w_.size(1))
    fail("linear", "input " + x.str() + " does not match weight " + w_.str());
  Tensor w = as_f32(w_);
  int64_t K = w.size(1), N = w.size(0), M = x.numel() / K;
  Shape os = x.shape();
  os.back() = N;
  Tensor y = Tensor::empty(os);
  float* yp = y.f32();
  if (b_.defined()) {
    Tensor b = as_f32(b_);
    const float* bp = b.f32();
    for (int64_t i = 0; i < M; i++) std::memcpy(yp + i * N, bp, N * 4);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, x.f32(), K, w.f32(), K,
              b_.defined() ? 1.f : 0.f, yp, N);
  return y;
}

Tensor ref::bmm(const Tensor& a, const Tensor& b, bool trans_b) {
  check_f32(a, "bmm");
  check_f32(b, "bmm");
  int64_t B = a.size(0), M = a.size(1), K = a.size(2);
  int64_t N = trans_b ? b.size(1) : b.size(2);
  if (b.size(0) != B || (trans_b ? b.size(2) : b.size(1)) != K)
    fail("bmm", "shapes " + a.str() + " and " + b.str() + " do not match");
  Tensor c = Tensor::empty({B, M, N});
  for (int64_t i = 0; i < B; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.f,
                a.f32() + i * M * K, K, b.f32() + i * K * N, trans_b ? K : N, 0.f,
                c.f32() + i * M * N, N);
  return c;
}

Tensor ref::conv2d(const Tensor& x, const Tensor& w_, const Tensor& b_, int stride, int pad) {
  check_f32(x, "conv2d");
  if (x.dim() != 4 || w_.dim() != 4 || x.size(1) != w_.size(1))
    fail("conv2d", "input " + x.str() + " does not match weight " + w_.str());
  Tensor w = as_f32(w_);
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  int64_t OH = (H + 2 * pad - kh) / stride + 1, OW = (W + 2 * pad - kw) / stride + 1;
  Tensor y = Tensor::empty({N, O, OH, OW});
  int64_t CK = C * kh * kw, P = OH * OW;
  bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  std::vector<float> col(direct ? 0 : CK * P);
  for (int64_t n = 0; n < N; n++) {
    const float* xp = x.f32() + n * C * H * W;
    const float* src = xp;
    if (!direct) {
#pragma omp parallel for
      for (int64_t ck = 0; ck < CK; ck++) {
        int64_t c = ck / (kh * kw), ky = ck / kw % kh, kx = ck % kw;
        float* dst = col.data() + ck * P;
        for (int64_t oy = 0; oy < OH; oy++) {
          int64_t iy = oy * stride - pad + ky;
          for (int64_t ox = 0; ox < OW; ox++) {
            int64_t ix = ox * stride - pad + kx;
            dst[oy * OW + ox] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? xp[(c * H + iy) * W + ix] : 0.f;
          }
        }
      }
      src = col.data();
    }
    float* yp = y.f32() + n * O * P;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, P, CK, 1.f, w.f32(), CK, src, P, 0.f, yp, P);
    if (b_.defined()) {
      Tensor b = as_f32(b_);
      for (int64_t o = 0; o < O; o++)
        for (int64_t p = 0; p < P; p++) yp[o * P + p] += b.f32()[o];
    }
  }
  return y;
}

Tensor ref::group_norm(const Tensor& x, int groups, const Tensor& gamma_, const Tensor& beta_, float eps,
                  bool do_silu) {
  check_f32(x, "group_norm");
  int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  if (C % groups) fail("group_norm", "channels " + std::to_string(C) + " not divisible by groups");
  Tensor gamma = as_f32(gamma_), beta = as_f32(beta_);
  Tensor y = Tensor::empty(x.shape());
  int64_t cg = C / groups;
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < N; n++)
    for (int64_t g = 0; g < groups; g++) {
      const float* xp = x.f32() + (n * C + g * cg) * S;
      float* yp = y.f32() + (n * C + g * cg) * S;
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < cg * S; i++) sum += xp[i];
      double mean = sum / (cg * S);
      for (int64_t i = 0; i < cg * S; i++) sq += (xp[i] - mean) * (xp[i] - mean);
      float rstd = 1.0f / std::sqrt((float)(sq / (cg * S)) + eps);
      for (int64_t c = 0; c < cg; c++) {
        float a = gamma.f32()[g * cg + c] * rstd, bb = beta.f32()[g * cg + c] - (float)mean * a;
        for (int64_t i = 0; i < S; i++) {
          float v = xp[c * S + i] * a + bb;
          yp[c * S + i] = do_silu ? v / (1.f + std::exp(-v)) : v;
        }
      }
    }
  return y;
}

Tensor ref::layer_norm(const Tensor& x, const Tensor& gamma_, const Tensor& beta_, float eps) {
  check_f32(x, "layer_norm");
  int64_t C = x.size(-1), M = x.numel() / C;
  Tensor gamma = as_f32(gamma_), beta = as_f32(beta_);
  Tensor y = Tensor::empty(x.shape());
#pragma omp parallel for
  for (int64_t m = 0; m < M; m++) {
    const float* xp = x.f32() + m * C;
    float* yp = y.f32() + m * C;
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < C; i++) sum += xp[i];
    double mean = sum / C;
    for (int64_t i = 0; i < C; i++) sq += (xp[i] - mean) * (xp[i] - mean);
    float rstd = 1.0f / std::sqrt((float)(sq / C) + eps);
    for (int64_t i = 0; i < C; i++) yp[i] = (xp[i] - (float)mean) * rstd * gamma.f32()[i] + beta.f32()[i];
  }
  return y;
}

Tensor ref::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  check_f32(q, "attention");
  int64_t B = q.size(0), Lq = q.size(1), Lk = k.size(1), HD = q.size(2), D = HD / heads;
  if (k.size(2) != HD || v.size(2) != HD || k.size(0) != B || v.size(1) != Lk)
    fail("attention", "q " + q.str() + ", k " + k.str() + ", v " + v.str() + " do not match");
  Tensor o = Tensor::empty({B, Lq, HD});
  float sc = 1.0f / std::sqrt((float)D);
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < heads; h++) {
      std::vector<float> s(Lk);
      for (int64_t i = 0; i < Lq; i++) {
        const float* qp = q.f32() + (b * Lq + i) * HD + h * D;
        float mx = -INFINITY;
        int64_t lim = causal ? std::min(Lk, i + 1) : Lk;
        for (int64_t j = 0; j < lim; j++) {
          const float* kp = k.f32() + (b * Lk + j) * HD + h * D;
          float acc = 0;
          for (int64_t d = 0; d < D; d++) acc += qp[d] * kp[d];
          s[j] = acc * sc;
          mx = std::max(mx, s[j]);
        }
        float den = 0;
        for (int64_t j = 0; j < lim; j++) den += (s[j] = std::exp(s[j] - mx));
        float* op = o.f32() + (b * Lq + i) * HD + h * D;
        for (int64_t d = 0; d < D; d++) op[d] = 0;
        for (int64_t j = 0; j < lim; j++) {
          const float* vp = v.f32() + (b * Lk + j) * HD + h * D;
          float p = s[j] / den;
          for (int64_t d = 0; d < D; d++) op[d] += p * vp[d];
        }
      }
    }
  return o;
}

template <class F>
static Tensor map(const Tensor& x, F f) {
  check_f32(x, "elementwise");
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  int64_t n = x.numel();
#pragma omp parallel for simd if (n > 32768)
  for (int64_t i = 0; i < n; i++) yp[i] = f(xp[i]);
  return y;
}

static inline float gelu_erf(float v) { return 0.5f * v * (1.f + std::erf(v * 0.70710678118654752f)); }

Tensor ref::silu(const Tensor& x) { return map(x, [](float v) { return v / (1.f + std::exp(-v)); }); }
Tensor gelu(const Tensor& x) { return map(x, [](float v) { return cpu::gelu_f(v); }); }  // lambda: inlined, vectorized
Tensor gelu_tanh(const Tensor& x) {
  return map(x, [](float v) {
    return 0.5f * v * (1.f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  });
}
Tensor ref::gelu(const Tensor& x) { return map(x, gelu_erf); }
Tensor quick_gelu(const Tensor& x) { return map(x, [](float v) { return v / (1.f + cpu::exp_f(-1.702f * v)); }); }
Tensor scale(const Tensor& x, float s) { return map(x, [s](float v) { return v * s; }); }

Tensor ref::geglu(const Tensor& x) {
  int64_t C2 = x.size(-1), N = C2 / 2, M = x.numel() / C2;
  Shape s = x.shape();
  s.back() = N;
  Tensor y = Tensor::empty(s);
  for (int64_t m = 0; m < M; m++)
    for (int64_t i = 0; i < N; i++) y.f32()[m * N + i] = x.f32()[m * C2 + i] * gelu_erf(x.f32()[m * C2 + N + i]);
  return y;
}

Tensor geglu(const Tensor& x) {
  check_f32(x, "geglu");
  int64_t C2 = x.size(-1), N = C2 / 2, M = x.numel() / C2;
  Shape s = x.shape();
  s.back() = N;
  Tensor y = Tensor::empty(s);
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for if (M * N > 32768)
  for (int64_t m = 0; m < M; m++)
#pragma omp simd
    for (int64_t i = 0; i < N; i++) yp[m * N + i] = xp[m * C2 + i] * cpu::gelu_f(xp[m * C2 + N + i]);
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor c = a.clone();
  add_(c, b);
  return c;
}

void add_(Tensor& a, const Tensor& b) {
  check_f32(a, "add");
  check_f32(b, "add");
  if (a.numel() != b.numel()) fail("add", "shapes " + a.str() + " and " + b.str() + " differ");
  int64_t n = a.numel();
  float* ap = a.f32();
  const float* bp = b.f32();
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; i++) ap[i] += bp[i];
}

void add_channel_bias_(Tensor& x, const Tensor& b) {
  check_f32(x, "add_channel_bias");
  int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  if (b.numel() != N * C) fail("add_channel_bias", "bias " + b.str() + " does not match " + x.str());
  float* xp = x.f32();
  const float* bp = b.f32();
#pragma omp parallel for if (N * C * S > 32768)
  for (int64_t i = 0; i < N * C; i++) {
    float v = bp[i];
    float* p = xp + i * S;
    for (int64_t s = 0; s < S; s++) p[s] += v;
  }
}

Tensor softmax(const Tensor& x) {
  check_f32(x, "softmax");
  int64_t C = x.size(-1), M = x.numel() / C;
  Tensor y = Tensor::empty(x.shape());
  for (int64_t m = 0; m < M; m++) {
    const float* xp = x.f32() + m * C;
    float* yp = y.f32() + m * C;
    float mx = *std::max_element(xp, xp + C), den = 0;
    for (int64_t i = 0; i < C; i++) den += (yp[i] = std::exp(xp[i] - mx));
    for (int64_t i = 0; i < C; i++) yp[i] /= den;
  }
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int dim) {
  if (xs.empty()) fail("concat", "no inputs");
  const Tensor& x0 = xs[0];
  if (dim < 0) dim += x0.dim();
  Shape s = x0.shape();
  s[dim] = 0;
  for (auto& x : xs) {
    if (x.dim() != x0.dim() || x.dtype() != x0.dtype()) fail("concat", "mismatched inputs " + x.str() + ", " + x0.str());
    for (int64_t d = 0; d < x0.dim(); d++)
      if (d != dim && x.size(d) != x0.size(d)) fail("concat", "mismatched inputs " + x.str() + ", " + x0.str());
    s[dim] += x.size(dim);
  }
  Tensor y = Tensor::empty(s, x0.dtype());
  int64_t outer = 1, inner = dtype_size(x0.dtype());
  for (int d = 0; d < dim; d++) outer *= s[d];
  for (int64_t d = dim + 1; d < (int64_t)s.size(); d++) inner *= s[d];
  char* dst = (char*)y.raw();
  for (int64_t o = 0; o < outer; o++)
    for (auto& x : xs) {
      size_t bytes = x.size(dim) * inner;
      std::memcpy(dst, (const char*)x.raw() + o * bytes, bytes);
      dst += bytes;
    }
  return y;
}

Tensor upsample_nearest2x(const Tensor& x) {
  check_f32(x, "upsample");
  int64_t NC = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), 2 * H, 2 * W});
#pragma omp parallel for
  for (int64_t c = 0; c < NC; c++)
    for (int64_t i = 0; i < 2 * H; i++)
      for (int64_t j = 0; j < 2 * W; j++) y.f32()[(c * 2 * H + i) * 2 * W + j] = x.f32()[(c * H + i / 2) * W + j / 2];
  return y;
}

Tensor nchw_to_nlc(const Tensor& x) {
  check_f32(x, "nchw_to_nlc");
  int64_t N = x.size(0), C = x.size(1), L = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({N, L, C});
  const float* xp = x.f32();
  float* yp = y.f32();
  // Blocks of 64 positions: the 64 output rows being filled stay in L1 while c advances.
  int64_t nb = (L + 63) / 64;
#pragma omp parallel for if (N * L * C > 32768)
  for (int64_t t = 0; t < N * nb; t++) {
    int64_t n = t / nb, l0 = t % nb * 64, l1 = std::min(L, l0 + 64);
    for (int64_t c = 0; c < C; c++)
      for (int64_t l = l0; l < l1; l++) yp[(n * L + l) * C + c] = xp[(n * C + c) * L + l];
  }
  return y;
}

Tensor nlc_to_nchw(const Tensor& x, int64_t h, int64_t w) {
  check_f32(x, "nlc_to_nchw");
  int64_t N = x.size(0), L = x.size(1), C = x.size(2);
  if (L != h * w) fail("nlc_to_nchw", "length " + std::to_string(L) + " != h*w");
  Tensor y = Tensor::empty({N, C, h, w});
  const float* xp = x.f32();
  float* yp = y.f32();
  int64_t nb = (L + 63) / 64;
#pragma omp parallel for if (N * L * C > 32768)
  for (int64_t t = 0; t < N * nb; t++) {
    int64_t n = t / nb, l0 = t % nb * 64, l1 = std::min(L, l0 + 64);
    for (int64_t c = 0; c < C; c++)
      for (int64_t l = l0; l < l1; l++) yp[(n * C + c) * L + l] = xp[(n * L + l) * C + c];
  }
  return y;
}

Tensor embedding(const Tensor& table, const Tensor& ids) {
  int64_t V = table.size(0), C = table.size(1), n = ids.numel();
  Shape s = ids.shape();
  s.push_back(C);
  Tensor y = Tensor::empty(s);
  for (int64_t i = 0; i < n; i++) {
    int64_t id = ids.dtype() == DType::I64 ? ids.data<int64_t>()[i] : ids.data<int32_t>()[i];
    if (id < 0 || id >= V) fail("embedding", "id " + std::to_string(id) + " out of range for table " + table.str());
    if (table.dtype() == DType::F32) std::memcpy(y.f32() + i * C, table.f32() + id * C, C * 4);
    else convert_to_f32((const char*)table.raw() + id * C * dtype_size(table.dtype()), table.dtype(), y.f32() + i * C, C);
  }
  return y;
}

}  // namespace easel::ops
