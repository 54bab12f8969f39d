// CPU vision ops for the preprocessor networks: pooling, interpolation, batch norm, activations.
// Index and weight rules follow ATen's CPU kernels (UpSample.h: area_pixel_compute_scale /
// area_pixel_compute_source_index, cubic_convolution1/2 with A = -0.75; Pooling.h:
// pooling_output_shape; AdaptiveAveragePooling: start_index / end_index).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "ops/cpu/cpu_util.h"
#include "ops/ops.h"

namespace easel::ops {

namespace {

void check_nchw(const Tensor& x, const char* op) {
  cpu::check_f32(x, op);
  if (x.dim() != 4) fail(op, "expected [N, C, H, W], got " + x.str());
}

// ATen's area_pixel_compute_scale (in float, as the float kernels compute it).
float pixel_scale(int64_t in, int64_t out, bool align_corners, double scale) {
  if (align_corners) return out > 1 ? float(in - 1) / float(out - 1) : 0.f;
  return scale > 0 ? float(1.0 / scale) : float(in) / float(out);
}

float source_index(float scale, int64_t dst, bool align_corners, bool cubic) {
  if (align_corners) return scale * float(dst);
  const float src = scale * (float(dst) + 0.5f) - 0.5f;
  return (!cubic && src < 0.f) ? 0.f : src;
}

// Per output coordinate: K source taps (clamped to the input) and their weights.
template <int K>
struct Taps {
  int64_t i[K];
  float w[K];
};

std::vector<Taps<2>> linear_taps(int64_t in, int64_t out, bool align_corners, double scale) {
  const float s = pixel_scale(in, out, align_corners, scale);
  std::vector<Taps<2>> t(out);
  for (int64_t o = 0; o < out; o++) {
    const float r = source_index(s, o, align_corners, false);
    const int64_t i0 = std::min<int64_t>((int64_t)r, in - 1);
    const float l = std::min(std::max(r - float(i0), 0.f), 1.f);
    t[o] = {{i0, i0 + (i0 < in - 1 ? 1 : 0)}, {1.f - l, l}};
  }
  return t;
}

float cubic1(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
float cubic2(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

std::vector<Taps<4>> cubic_taps(int64_t in, int64_t out, bool align_corners, double scale) {
  const float s = pixel_scale(in, out, align_corners, scale), A = -0.75f;
  std::vector<Taps<4>> t(out);
  for (int64_t o = 0; o < out; o++) {
    const float r = source_index(s, o, align_corners, true);
    const int64_t f = (int64_t)std::floor(r);
    const float d = r - float(f);
    t[o].w[0] = cubic2(d + 1, A), t[o].w[1] = cubic1(d, A), t[o].w[2] = cubic1(1 - d, A), t[o].w[3] = cubic2(2 - d, A);
    for (int k = 0; k < 4; k++) t[o].i[k] = std::min(std::max<int64_t>(f - 1 + k, 0), in - 1);
  }
  return t;
}

// Separable resampling x [N, C, H, W] -> [N, C, oh, ow]: each source row is filtered along W, then
// the rows are combined along H (ATen's order).
template <int K>
Tensor resample(const Tensor& x, const std::vector<Taps<K>>& th, const std::vector<Taps<K>>& tw) {
  const int64_t H = x.size(2), W = x.size(3), NC = x.size(0) * x.size(1);
  const int64_t oh = (int64_t)th.size(), ow = (int64_t)tw.size();
  Tensor y = Tensor::empty({x.size(0), x.size(1), oh, ow});
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for if (NC * oh * ow > 16384)
  for (int64_t c = 0; c < NC; c++)
    for (int64_t i = 0; i < oh; i++) {
      float* d = yp + (c * oh + i) * ow;
      for (int64_t j = 0; j < ow; j++) {
        const Taps<K>& t = tw[j];
        float acc = 0;
        for (int k = 0; k < K; k++) {
          const float* r = xp + (c * H + th[i].i[k]) * W;
          float row = 0;
          for (int q = 0; q < K; q++) row += t.w[q] * r[t.i[q]];
          acc += th[i].w[k] * row;
        }
        d[j] = acc;
      }
    }
  return y;
}

void check_resize(const Tensor& x, int64_t oh, int64_t ow, const char* op) {
  check_nchw(x, op);
  if (oh < 1 || ow < 1 || x.size(2) < 1 || x.size(3) < 1)
    fail(op, "bad size " + std::to_string(oh) + "x" + std::to_string(ow) + " for " + x.str());
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad, bool ceil_mode) {
  check_nchw(x, "max_pool2d");
  if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
    fail("max_pool2d", "bad kernel/stride/padding " + std::to_string(kernel) + "/" + std::to_string(stride) + "/" +
                           std::to_string(pad));
  const int64_t H = x.size(2), W = x.size(3);
  auto out_size = [&](int64_t in) {  // ATen pooling_output_shape
    int64_t o = (in + 2 * pad - kernel + (ceil_mode ? stride - 1 : 0)) / stride + 1;
    if (ceil_mode && (o - 1) * stride >= in + pad) o--;
    return o;
  };
  const int64_t OH = out_size(H), OW = out_size(W);
  if (OH <= 0 || OW <= 0) fail("max_pool2d", "input " + x.str() + " too small for kernel " + std::to_string(kernel));
  Tensor y = Tensor::empty({x.size(0), x.size(1), OH, OW});
  const int64_t NC = x.size(0) * x.size(1);
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for if (NC * OH * OW > 16384)
  for (int64_t c = 0; c < NC; c++)
    for (int64_t i = 0; i < OH; i++)
      for (int64_t j = 0; j < OW; j++) {
        const int64_t h0 = i * stride - pad, w0 = j * stride - pad;
        const int64_t h1 = std::min(h0 + kernel, H), w1 = std::min(w0 + kernel, W);
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t h = std::max<int64_t>(h0, 0); h < h1; h++)
          for (int64_t w = std::max<int64_t>(w0, 0); w < w1; w++) {
            const float v = xp[(c * H + h) * W + w];
            if (v > m || std::isnan(v)) m = v;  // NaN propagates, as in PyTorch
          }
        yp[(c * OH + i) * OW + j] = m;
      }
  return y;
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t oh, int64_t ow) {
  check_nchw(x, "adaptive_avg_pool2d");
  if (oh < 1 || ow < 1) fail("adaptive_avg_pool2d", "bad output size");
  const int64_t H = x.size(2), W = x.size(3), NC = x.size(0) * x.size(1);
  Tensor y = Tensor::empty({x.size(0), x.size(1), oh, ow});
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for if (NC * H * W > 65536)
  for (int64_t c = 0; c < NC; c++)
    for (int64_t i = 0; i < oh; i++) {
      const int64_t h0 = i * H / oh, h1 = ((i + 1) * H + oh - 1) / oh;
      for (int64_t j = 0; j < ow; j++) {
        const int64_t w0 = j * W / ow, w1 = ((j + 1) * W + ow - 1) / ow;
        float s = 0;
        for (int64_t h = h0; h < h1; h++)
          for (int64_t w = w0; w < w1; w++) s += xp[(c * H + h) * W + w];
        yp[(c * oh + i) * ow + j] = s / float((h1 - h0) * (w1 - w0));
      }
    }
  return y;
}

Tensor interpolate_bilinear(const Tensor& x, int64_t oh, int64_t ow, bool align_corners, double scale_h,
                            double scale_w) {
  check_resize(x, oh, ow, "interpolate_bilinear");
  return resample(x, linear_taps(x.size(2), oh, align_corners, scale_h),
                  linear_taps(x.size(3), ow, align_corners, scale_w));
}

Tensor interpolate_bicubic(const Tensor& x, int64_t oh, int64_t ow, bool align_corners, double scale_h,
                           double scale_w) {
  check_resize(x, oh, ow, "interpolate_bicubic");
  return resample(x, cubic_taps(x.size(2), oh, align_corners, scale_h),
                  cubic_taps(x.size(3), ow, align_corners, scale_w));
}

Tensor batch_norm(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma, const Tensor& beta,
                  float eps) {
  cpu::check_f32(x, "batch_norm");
  if (x.dim() < 2) fail("batch_norm", "expected [N, C, ...], got " + x.str());
  const int64_t N = x.size(0), C = x.size(1), L = x.numel() / std::max<int64_t>(N * C, 1);
  for (const Tensor* t : {&mean, &var, &gamma, &beta})
    if (!t->defined() || t->numel() != C) fail("batch_norm", "parameter does not match " + x.str());
  const Tensor m = mean.to(DType::F32), v = var.to(DType::F32), g = gamma.to(DType::F32), b = beta.to(DType::F32);
  std::vector<float> sc(C), sh(C);
  for (int64_t c = 0; c < C; c++) {
    sc[c] = g.f32()[c] / std::sqrt(v.f32()[c] + eps);
    sh[c] = b.f32()[c] - m.f32()[c] * sc[c];
  }
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for if (x.numel() > 65536)
  for (int64_t nc = 0; nc < N * C; nc++) {
    const float a = sc[nc % C], s = sh[nc % C];
    for (int64_t l = 0; l < L; l++) yp[nc * L + l] = xp[nc * L + l] * a + s;
  }
  return y;
}

void relu_(Tensor& x) {
  cpu::check_f32(x, "relu");
  float* p = x.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; i++) p[i] = p[i] > 0.f ? p[i] : (std::isnan(p[i]) ? p[i] : 0.f);
}

Tensor relu(const Tensor& x) {
  Tensor y = x.clone();
  relu_(y);
  return y;
}

Tensor sigmoid(const Tensor& x) {
  cpu::check_f32(x, "sigmoid");
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; i++) yp[i] = 1.f / (1.f + cpu::exp_f(-xp[i]));
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  cpu::check_f32(a, "mul");
  cpu::check_f32(b, "mul");
  if (a.numel() != b.numel()) fail("mul", "size mismatch " + a.str() + " vs " + b.str());
  Tensor y = Tensor::empty(a.shape());
  const float *ap = a.f32(), *bp = b.f32();
  float* yp = y.f32();
  const int64_t n = a.numel();
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; i++) yp[i] = ap[i] * bp[i];
  return y;
}

}  // namespace easel::ops
