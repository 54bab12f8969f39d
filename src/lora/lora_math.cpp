// ΔW of one LoRA-family module (formulas in lora.h), in f32.
//   https://github.com/KohakuBlueleaf/LyCORIS/blob/main/lycoris/functional/{locon,loha,lokr,general}.py
//   https://github.com/huggingface/peft/blob/main/src/peft/tuners/lora/dora.py
#include <dnnl.h>

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "lora/lora.h"

namespace easel::lora {
namespace {

// [M, K] @ [K, N] -> [M, N], row-major, f32 (oneDNN sgemm, row-major: a rank-32 ΔW of SDXL's 1280x1280 layers is
// ~50 MFLOP each, several hundred layers per LoRA).
std::vector<float> matmul(const float* a, const float* b, int64_t M, int64_t K, int64_t N) {
  std::vector<float> c((size_t)(M * N), 0.f);
  if (M && N && K)
    dnnl_sgemm('N', 'N', M, N, K, 1.f, a, K, b, N, 0.f, c.data(), N);
  return c;
}

std::vector<float> transpose(const float* a, int64_t M, int64_t N) {  // [M, N] -> [N, M]
  std::vector<float> t((size_t)(M * N));
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) t[j * M + i] = a[i * N + j];
  return t;
}

const Tensor& get(const Module& m, const char* name) { return m.t.at(name); }

// Tucker rebuild Σ_ij t[i,j,s] a[i,p] b[j,q] -> [P, Q, S] with t [R1, R2, S], a [R1, P], b [R2, Q]
// (LyCORIS rebuild_tucker, "i j ..., i p, j r -> p r ...").
std::vector<float> tucker(const Tensor& t, const float* a, const float* b, int64_t P, int64_t Q) {
  const int64_t R1 = t.size(0), R2 = t.size(1), S = t.numel() / (R1 * R2);
  // u[i, q, s] = Σ_j t[i, j, s] b[j, q]
  std::vector<float> u((size_t)(R1 * Q * S), 0.f);
  const float* tp = t.f32();
  for (int64_t i = 0; i < R1; i++)
    for (int64_t j = 0; j < R2; j++)
      for (int64_t q = 0; q < Q; q++) {
        const float bv = b[j * Q + q];
        const float* ts = tp + (i * R2 + j) * S;
        float* us = u.data() + (i * Q + q) * S;
        for (int64_t s = 0; s < S; s++) us[s] += ts[s] * bv;
      }
  // out[p, q, s] = Σ_i a[i, p] u[i, q, s]
  std::vector<float> at = transpose(a, R1, P);  // [P, R1]
  return matmul(at.data(), u.data(), P, R1, Q * S);
}

// ΔW0 (the product, no scale, no strength) in the module's natural layout, numel = W's.
std::vector<float> product(const Module& m) {
  const int64_t out = m.shape[0], cols = shape_numel(m.shape) / out;
  switch (m.kind) {
    case Kind::Full: return get(m, "diff").to_vector();
    case Kind::LoRA: {
      const Tensor& down = get(m, "down");  // [r, in(, kh, kw)]
      const Tensor& up = get(m, "up");      // [out, r(, 1, 1)]
      const int64_t r = down.size(0);
      if (m.t.count("mid")) {  // up[o,i] mid[i,j,..] down[j,c]: tucker(mid, up^T, down)
        std::vector<float> upT = transpose(up.f32(), out, up.size(1));
        return tucker(get(m, "mid"), upT.data(), down.f32(), out, down.numel() / r);
      }
      return matmul(up.f32(), down.f32(), out, r, cols);
    }
    case Kind::LoHa: {
      std::vector<float> h1, h2;
      if (m.t.count("hada_t1")) {  // w_a [r, out], w_b [r, in], t [r, r, kh, kw]
        const Tensor& w1b = get(m, "hada_w1_b");
        const Tensor& w2b = get(m, "hada_w2_b");
        h1 = tucker(get(m, "hada_t1"), get(m, "hada_w1_a").f32(), w1b.f32(), out, w1b.size(1));
        h2 = tucker(get(m, "hada_t2"), get(m, "hada_w2_a").f32(), w2b.f32(), out, w2b.size(1));
      } else {
        const Tensor& w1b = get(m, "hada_w1_b");
        const Tensor& w2b = get(m, "hada_w2_b");
        h1 = matmul(get(m, "hada_w1_a").f32(), w1b.f32(), out, w1b.size(0), cols);
        h2 = matmul(get(m, "hada_w2_a").f32(), w2b.f32(), out, w2b.size(0), cols);
      }
      for (size_t i = 0; i < h1.size(); i++) h1[i] *= h2[i];
      return h1;
    }
    case Kind::LoKr: {
      std::vector<float> w1, w2;
      int64_t a, c, b, x;  // w1 [a, c], w2 [b, x] (x = d * kernel)
      if (m.t.count("lokr_w1")) {
        const Tensor& t = get(m, "lokr_w1");
        w1 = t.to_vector(), a = t.size(0), c = t.size(1);
      } else {
        const Tensor& wa = get(m, "lokr_w1_a");
        const Tensor& wb = get(m, "lokr_w1_b");
        a = wa.size(0), c = wb.size(1);
        w1 = matmul(wa.f32(), wb.f32(), a, wa.size(1), c);
      }
      if (m.t.count("lokr_w2")) {
        const Tensor& t = get(m, "lokr_w2");
        w2 = t.to_vector(), b = t.size(0), x = t.numel() / b;
      } else if (m.t.count("lokr_t2")) {  // w2a [r, b], w2b [r, d]
        const Tensor& wa = get(m, "lokr_w2_a");
        const Tensor& wb = get(m, "lokr_w2_b");
        const Tensor& t = get(m, "lokr_t2");
        b = wa.size(1), x = wb.size(1) * (t.numel() / (t.size(0) * t.size(1)));
        w2 = tucker(t, wa.f32(), wb.f32(), b, wb.size(1));
      } else {  // w2a [b, r], w2b [r, x]
        const Tensor& wa = get(m, "lokr_w2_a");
        const Tensor& wb = get(m, "lokr_w2_b");
        b = wa.size(0), x = wb.numel() / wb.size(0);
        w2 = matmul(wa.f32(), wb.f32(), b, wa.size(1), x);
      }
      // kron: ΔW[i*b + p, j*x + q] = w1[i, j] * w2[p, q]   (torch.kron on w1 unsqueezed to w2's rank)
      std::vector<float> r((size_t)(a * b * c * x));
      const int64_t N = c * x;
      for (int64_t i = 0; i < a; i++)
        for (int64_t p = 0; p < b; p++) {
          float* row = r.data() + (i * b + p) * N;
          for (int64_t j = 0; j < c; j++) {
            const float v = w1[i * c + j];
            const float* w2p = w2.data() + p * x;
            for (int64_t q = 0; q < x; q++) row[j * x + q] = v * w2p[q];
          }
        }
      return r;
    }
  }
  return {};
}

// Norms of V along DoRA's axis: per output row (n = out) or per input column over (out, kernel).
std::vector<double> norms(const std::vector<float>& v, const Shape& s, bool rows) {
  const int64_t out = s[0], in = s.size() > 1 ? s[1] : 1, k = shape_numel(s) / (out * in);
  std::vector<double> n(rows ? out : in, 0.0);
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++)
      for (int64_t j = 0; j < k; j++) {
        double x = v[(o * in + i) * k + j];
        n[rows ? o : i] += x * x;
      }
  for (auto& x : n) x = std::sqrt(x);
  return n;
}

}  // namespace

bool accumulate_delta(const Module& m, float strength, Tensor& acc) {
  if (m.kind != Kind::LoRA || m.t.count("mid") || m.dora()) return false;
  const Tensor& down = get(m, "down");
  const int64_t out = m.shape[0], r = down.size(0), cols = shape_numel(m.shape) / out;
  EASEL_CHECK(acc.dtype() == DType::F32 && acc.numel() == shape_numel(m.shape), "lora",
              m.module + ": accumulator does not match " + shape_str(m.shape));
  if (out && cols && r)
    dnnl_sgemm('N', 'N', out, cols, r, strength * m.scale, get(m, "up").f32(), r, down.f32(), cols, 1.f, acc.f32(),
               cols);
  return true;
}

Tensor delta_weight(const Module& m, const Tensor& W, float strength, DoraStrength ds) {
  if (m.kind == Kind::LoRA && !m.t.count("mid") && !m.dora()) {  // fast path: one GEMM into the result
    const Tensor& down = get(m, "down");
    const int64_t out = m.shape[0], r = down.size(0), cols = shape_numel(m.shape) / out;
    Tensor d = Tensor::empty(m.shape);
    if (out && cols && r)
      dnnl_sgemm('N', 'N', out, cols, r, strength * m.scale, get(m, "up").f32(), r, down.f32(), cols, 0.f, d.f32(),
                 cols);
    else
      std::fill(d.f32(), d.f32() + d.numel(), 0.f);
    return d;
  }
  std::vector<float> d = product(m);
  const int64_t out = m.shape[0], in = m.shape.size() > 1 ? m.shape[1] : 1;
  const int64_t k = shape_numel(m.shape) / (out * std::max<int64_t>(in, 1));
  if (!m.dora()) {
    const float f = m.kind == Kind::Full ? strength : strength * m.scale;
    for (auto& x : d) x *= f;
    return Tensor::from_vector(d, m.shape);
  }
  EASEL_CHECK(W.defined() && W.numel() == shape_numel(m.shape), "lora",
              m.module + ": DoRA needs the model weight " + shape_str(m.shape));
  std::vector<float> w = W.to_vector();
  const bool peft = m.t.count("magnitude") != 0;
  const Tensor& mag = peft ? get(m, "magnitude") : get(m, "dora_scale");
  // PEFT: the norm is per output row, strength inside V. LyCORIS/kohya dora_scale: the axis
  // follows its shape ([out, 1, ..] rows, [1, in, ..] columns), strength interpolates W -> W'.
  const bool rows = peft || (mag.size(0) == out && mag.numel() == out);
  const float f = peft ? strength * m.scale : m.scale;
  std::vector<float> v(d.size());
  for (size_t i = 0; i < d.size(); i++) v[i] = w[i] + f * d[i];
  std::vector<double> n = norms(v, m.shape, rows);
  const float* g = mag.f32();
  const double eps = peft ? 0.0 : FLT_EPSILON;  // LyCORIS adds torch.finfo(f32).eps
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++)
      for (int64_t j = 0; j < k; j++) {
        const size_t at = (size_t)((o * in + i) * k + j);
        const int64_t ax = rows ? o : i;
        const double wp = (double)v[at] * g[ax] / (n[ax] + eps);
        double r;
        if (peft)
          r = wp - w[at];
        else if (ds == DoraStrength::LyCORIS)  // V·(s·(g/n - 1) + 1) - W
          r = (double)v[at] * (strength * ((double)g[ax] / (n[ax] + eps) - 1.0) + 1.0) - w[at];
        else  // W + s·(W'(1) - W)
          r = strength * (wp - w[at]);
        d[at] = (float)r;
      }
  return Tensor::from_vector(d, m.shape);
}

Tensor delta_bias(const Module& m, float strength) {
  auto it = m.t.find("diff_b");
  if (it == m.t.end()) return {};
  std::vector<float> b = it->second.to_vector();
  for (auto& x : b) x *= strength;
  return Tensor::from_vector(b, it->second.shape());
}

}  // namespace easel::lora
