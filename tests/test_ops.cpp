// One test binary for every CPU op (ggml's test-backend-ops idea): each fast path against the
// straightforward reference kernel in ops::ref, on odd shapes, with f32/f16/bf16 weights, in
// F32 compute mode (tolerance ~1e-5 relative to the output scale) and BF16 mode (a per-element
// bound derived from bf16 rounding, see bf16_bound).
#include <cmath>
#include <random>

#include "common.h"
#include "ops/ops.h"

using namespace easel;

namespace {

Tensor randt(const Shape& s, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = u(g);
  return t;
}

Tensor absval(const Tensor& t) {
  Tensor r = t.to(DType::F32).clone();
  for (int64_t i = 0; i < r.numel(); i++) r.f32()[i] = std::fabs(r.f32()[i]);
  return r;
}

float max_abs(const Tensor& t) {
  float m = 0;
  for (float v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

// Max |a - b| / max |b|: the normwise relative error printed by the tests.
double rel_err(const Tensor& a, const Tensor& b) {
  auto av = a.to_vector(), bv = b.to_vector();
  double d = 0, m = 0;
  for (size_t i = 0; i < av.size(); i++) d = std::max(d, std::fabs((double)av[i] - bv[i])), m = std::max(m, (double)std::fabs(bv[i]));
  return d / std::max(m, 1e-30);
}

// F32 mode: different summation order only. Dot products of length K lose ~sqrt(K)*2^-24 of
// the output scale; 1e-5 of max|ref| (plus 1e-5 relative) covers K up to ~10^5.
::testing::AssertionResult close_f32(const Tensor& a, const Tensor& ref) {
  return test::allclose(a, ref, 1e-5f * max_abs(ref), 1e-5f);
}

// BF16 mode: each operand is rounded to bf16 (relative error <= 2^-9), so each product
// a_i*b_i is off by <= (2^-8 + 2^-18)|a_i b_i| and the dot product by <= 2^-8 sum |a_i b_i|
// (f32 accumulation adds ~K 2^-24, negligible). `absref` is the op on |inputs| = sum |a_i b_i|.
// Checked per element: |fast - ref| <= 1.02 * 2^-8 * absref + tiny.
::testing::AssertionResult close_bf16(const Tensor& a, const Tensor& ref, const Tensor& absref) {
  auto av = a.to_vector(), rv = ref.to_vector(), bv = absref.to_vector();
  for (size_t i = 0; i < av.size(); i++) {
    double bound = 1.02 * std::ldexp(1.0, -8) * bv[i] + 1e-6;
    if (!(std::fabs((double)av[i] - rv[i]) <= bound))
      return ::testing::AssertionFailure() << "index " << i << ": " << av[i] << " vs ref " << rv[i] << " bound " << bound;
  }
  return ::testing::AssertionSuccess();
}

struct ComputeMode {
  explicit ComputeMode(DType t) { ops::set_compute_dtype(t); }
  ~ComputeMode() { ops::set_compute_dtype(DType::F32); }
};

}  // namespace

class OpsW : public ::testing::TestWithParam<DType> {};  // weight dtype

TEST_P(OpsW, LinearF32) {
  DType wt = GetParam();
  for (auto [M, K, N] : {std::tuple{21, 37, 29}, {1, 5, 3}, {154, 768, 320}}) {
    Tensor x = randt({M / 7 ? 7 : 1, M / (M / 7 ? 7 : 1), K}, 1 + K), w = randt({N, K}, 2 + N).to(wt), b = randt({N}, 3).to(wt);
    Tensor y = ops::linear(x, w, b), r = ops::ref::linear(x, w, b);
    EXPECT_TRUE(close_f32(y, r)) << M << "x" << K << "x" << N;
    EXPECT_TRUE(close_f32(ops::linear(x, w, Tensor()), ops::ref::linear(x, w, Tensor())));
    std::printf("linear f32 %dx%dx%d w=%s: rel err %.2e\n", M, K, N, dtype_name(wt), rel_err(y, r));
  }
}

TEST_P(OpsW, LinearBF16) {
  DType wt = GetParam();
  ComputeMode mode(DType::BF16);
  for (auto [M, K, N] : {std::tuple{21, 37, 29}, {154, 768, 320}}) {
    Tensor x = randt({M, K}, 4 + K), w = randt({N, K}, 5 + N).to(wt), b = randt({N}, 6);
    Tensor y = ops::linear(x, w, b), r = ops::ref::linear(x, w, b);
    Tensor ar = ops::ref::linear(absval(x), absval(w), absval(b));
    EXPECT_TRUE(close_bf16(y, r, ar));
    std::printf("linear bf16 %dx%dx%d w=%s: rel err %.2e\n", M, K, N, dtype_name(wt), rel_err(y, r));
  }
}

TEST_P(OpsW, Conv2d) {
  DType wt = GetParam();
  struct C { int64_t n, c, h, w, o, k; int stride, pad; bool bias; };
  for (C c : {C{2, 5, 13, 11, 7, 3, 1, 1, true}, C{1, 6, 9, 10, 4, 3, 2, 0, true}, C{2, 8, 7, 5, 3, 1, 1, 0, false},
              C{1, 32, 16, 16, 19, 3, 2, 1, true}, C{2, 3, 5, 5, 64, 3, 1, 1, true}}) {
    Tensor x = randt({c.n, c.c, c.h, c.w}, 7 + c.c), w = randt({c.o, c.c, c.k, c.k}, 8 + c.o).to(wt);
    Tensor b = c.bias ? randt({c.o}, 9).to(wt) : Tensor();
    Tensor r = ops::ref::conv2d(x, w, b, c.stride, c.pad);
    Tensor y = ops::conv2d(x, w, b, c.stride, c.pad);
    EXPECT_TRUE(close_f32(y, r)) << x.str() << " * " << w.str();
    double e32 = rel_err(y, r);
    ComputeMode mode(DType::BF16);
    Tensor yb = ops::conv2d(x, w, b, c.stride, c.pad);
    Tensor ar = ops::ref::conv2d(absval(x), absval(w), c.bias ? absval(b) : Tensor(), c.stride, c.pad);
    EXPECT_TRUE(close_bf16(yb, r, ar)) << x.str() << " * " << w.str();
    std::printf("conv2d %s * %s s%d p%d: rel err f32 %.2e bf16 %.2e\n", x.str().c_str(), w.str().c_str(), c.stride,
                c.pad, e32, rel_err(yb, r));
  }
}

// Winograd (oneDNN picks its F(2x2,3x3) kernel on AVX-512): transform round-off makes the bound looser than
// direct conv's ~1e-6 but stays orders below a wrong result; checked on SD-like channel counts.
TEST(Ops, Conv2dWinograd) {
  ops::set_winograd(true);
  for (int64_t c : {16, 64, 320}) {
    Tensor x = randt({2, c, 18, 13}, 21), w = randt({32, c, 3, 3}, 22).to(DType::F16), b = randt({32}, 23);
    Tensor r = ops::ref::conv2d(x, w, b, 1, 1);
    Tensor y = ops::conv2d(x, w, b, 1, 1);
    double e = rel_err(y, r);
    EXPECT_LT(e, 5e-6) << "channels " << c;
    std::printf("conv2d winograd C=%lld: rel err %.2e\n", (long long)c, e);
  }
  ops::set_winograd(false);
}

INSTANTIATE_TEST_SUITE_P(Weights, OpsW, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });

TEST(Ops, Bmm) {
  for (bool tb : {false, true}) {
    Tensor a = randt({3, 17, 23}, 10), b = tb ? randt({3, 13, 23}, 11) : randt({3, 23, 13}, 11);
    Tensor r = ops::ref::bmm(a, b, tb);
    EXPECT_TRUE(close_f32(ops::bmm(a, b, tb), r));
    ComputeMode mode(DType::BF16);
    EXPECT_TRUE(close_bf16(ops::bmm(a, b, tb), r, ops::ref::bmm(absval(a), absval(b), tb)));
  }
}

TEST(Ops, Attention) {
  struct A { int64_t b, lq, lk, heads, d; bool causal; };
  for (A a : {A{2, 67, 67, 3, 5, false}, A{2, 77, 77, 2, 8, true}, A{1, 300, 13, 4, 10, false},
              A{2, 300, 1100, 2, 40, false}, A{1, 129, 129, 1, 16, true},
              A{2, 100, 77, 2, 64, false}, A{1, 70, 70, 1, 130, false}, A{1, 50, 64, 1, 512, false}}) {
    // Scores of O(1) magnitude (|q.k|/sqrt(D) up to a few) so softmax is far from uniform.
    float s = 2.0f;
    Tensor q = randt({a.b, a.lq, a.heads * a.d}, 12, -s, s), k = randt({a.b, a.lk, a.heads * a.d}, 13, -s, s);
    Tensor v = randt({a.b, a.lk, a.heads * a.d}, 14);
    Tensor r = ops::ref::attention(q, k, v, (int)a.heads, a.causal);
    Tensor y = ops::attention(q, k, v, (int)a.heads, a.causal);
    EXPECT_TRUE(close_f32(y, r)) << q.str() << " " << k.str();
    double e32 = rel_err(y, r);
    ComputeMode mode(DType::BF16);
    Tensor yb = ops::attention(q, k, v, (int)a.heads, a.causal);
    // bf16 q/k perturb each score by <= 2^-8 sum|q_i k_i|/sqrt(D) (<= 2^-8 * 4 sqrt(D) here,
    // a few 1e-2 absolute); bf16 probabilities and v add ~2^-8 relative. Output is a convex
    // combination of v in [-1, 1]: 3e-2 absolute covers D <= 40 with margin.
    EXPECT_TRUE(test::allclose(yb, r, 3e-2f, 0.f));
    std::printf("attention %s x %s heads %ld%s: rel err f32 %.2e bf16 %.2e\n", q.str().c_str(), k.str().c_str(),
                (long)a.heads, a.causal ? " causal" : "", e32, rel_err(yb, r));
  }
}

TEST(Ops, GroupNorm) {
  for (DType wt : {DType::F32, DType::F16}) {
    for (bool silu : {false, true}) {
      Tensor x = randt({2, 12, 7, 9}, 15, -3.f, 5.f), g = randt({12}, 16).to(wt), b = randt({12}, 17).to(wt);
      Tensor r = ops::ref::group_norm(x, 4, g, b, 1e-5f, silu), y = ops::group_norm(x, 4, g, b, 1e-5f, silu);
      EXPECT_TRUE(close_f32(y, r));
      std::printf("group_norm silu=%d: rel err %.2e\n", silu, rel_err(y, r));
    }
  }
  Tensor x = randt({1, 64, 33}, 18, 10.f, 11.f);  // large mean, small variance: two-pass stats
  Tensor g = randt({64}, 19), b = randt({64}, 20);
  EXPECT_TRUE(close_f32(ops::group_norm(x, 32, g, b, 1e-6f), ops::ref::group_norm(x, 32, g, b, 1e-6f)));
}

TEST(Ops, LayerNorm) {
  Tensor x = randt({3, 5, 37}, 21, -2.f, 3.f), g = randt({37}, 22), b = randt({37}, 23);
  Tensor r = ops::ref::layer_norm(x, g, b, 1e-5f), y = ops::layer_norm(x, g, b, 1e-5f);
  EXPECT_TRUE(close_f32(y, r));
  Tensor x2 = randt({1000, 768}, 24, -2.f, 3.f), g2 = randt({768}, 25), b2 = randt({768}, 26);
  EXPECT_TRUE(close_f32(ops::layer_norm(x2, g2, b2, 1e-5f), ops::ref::layer_norm(x2, g2, b2, 1e-5f)));
  std::printf("layer_norm: rel err %.2e\n", rel_err(y, r));
}

TEST(Ops, Silu) {
  Tensor x = randt({3, 50001}, 27, -30.f, 30.f);
  x.f32()[0] = -100.f, x.f32()[1] = 100.f, x.f32()[2] = 0.f;
  Tensor y = ops::silu(x), r = ops::ref::silu(x);
  EXPECT_TRUE(test::allclose(y, r, 1e-7f, 1e-6f));
  std::printf("silu: rel err %.2e\n", rel_err(y, r));
}

TEST(Ops, WeightCache) {
  ComputeMode mode(DType::BF16);
  ops::clear_weight_cache();
  EXPECT_EQ(ops::weight_cache_bytes(), 0u);
  Tensor x = randt({9, 33}, 28), w = randt({17, 33}, 29);
  Tensor y1 = ops::linear(x, w, Tensor());
  EXPECT_GE(ops::weight_cache_bytes(), 17u * 33u * 2u);
  // In-place weight change (as a LoRA merge does) + clear: the new weight is used.
  for (int64_t i = 0; i < w.numel(); i++) w.f32()[i] *= -2.f;
  ops::clear_weight_cache();
  Tensor y2 = ops::linear(x, w, Tensor());
  Tensor r2 = ops::ref::linear(x, w, Tensor());
  EXPECT_TRUE(close_bf16(y2, r2, ops::ref::linear(absval(x), absval(w), Tensor())));
  EXPECT_FALSE(close_bf16(y1, r2, ops::ref::linear(absval(x), absval(w), Tensor())));
  // Temporary weights (a fresh tensor per call) are evicted least-recently-used past the limit.
  ops::set_weight_cache_limit(3 * 17 * 33 * 2 + 1024);
  for (int i = 0; i < 10; i++) {
    Tensor wt = randt({17, 33}, 100 + i);
    Tensor yt = ops::linear(x, wt, Tensor());
    EXPECT_TRUE(close_bf16(yt, ops::ref::linear(x, wt, Tensor()), ops::ref::linear(absval(x), absval(wt), Tensor())));
  }
  EXPECT_LE(ops::weight_cache_bytes(), 3u * 17u * 33u * 2u + 1024u);
  ops::set_weight_cache_limit(SIZE_MAX);
  ops::clear_weight_cache();
}

TEST(Ops, Info) {
  std::printf("bf16 faster than f32 here (AMX): %s; threads %d\n", ops::bf16_is_fast() ? "yes" : "no",
              ops::num_threads());
  int n = ops::num_threads();
  ops::set_num_threads(1);
  EXPECT_EQ(ops::num_threads(), 1);
  Tensor x = randt({50, 33}, 32), w = randt({17, 33}, 33);
  EXPECT_TRUE(close_f32(ops::linear(x, w, Tensor()), ops::ref::linear(x, w, Tensor())));
  ops::set_num_threads(n);
  EXPECT_THROW(ops::set_compute_dtype(DType::F16), Error);
}

TEST(Ops, Errors) {
  EXPECT_THROW(ops::linear(randt({2, 3}, 1), randt({4, 5}, 2), Tensor()), Error);
  EXPECT_THROW(ops::conv2d(randt({1, 3, 4, 4}, 1), randt({2, 4, 3, 3}, 2), Tensor(), 1, 1), Error);
  EXPECT_THROW(ops::attention(randt({1, 4, 6}, 1), randt({1, 5, 6}, 2), randt({1, 4, 6}, 3), 2), Error);
  EXPECT_THROW(ops::group_norm(randt({1, 6, 2, 2}, 1), 4, randt({6}, 2), randt({6}, 3), 1e-5f), Error);
}

TEST(Ops, GeluGeglu) {
  Tensor x = randt({3, 20001}, 30, -12.f, 12.f);
  x.f32()[0] = 0.f, x.f32()[1] = -30.f, x.f32()[2] = 40.f;
  // erfc fit: 1.2e-7 relative; the negative tail keeps relative accuracy (0.5 x erfc).
  EXPECT_TRUE(test::allclose(ops::gelu(x), ops::ref::gelu(x), 1e-7f, 1e-6f));
  Tensor g = randt({2, 7, 2 * 333}, 31, -6.f, 6.f);
  EXPECT_TRUE(test::allclose(ops::geglu(g), ops::ref::geglu(g), 1e-6f, 1e-6f));
  std::printf("gelu: rel err %.2e, geglu %.2e\n", rel_err(ops::gelu(x), ops::ref::gelu(x)),
              rel_err(ops::geglu(g), ops::ref::geglu(g)));
}

TEST(Ops, Layout) {
  Tensor x = randt({2, 37, 9, 11}, 40);  // L = 99: one full 64-block and a tail
  Tensor y = ops::nchw_to_nlc(x);
  ASSERT_EQ(y.shape(), (Shape{2, 99, 37}));
  for (int64_t n = 0; n < 2; n++)
    for (int64_t c = 0; c < 37; c++)
      for (int64_t l = 0; l < 99; l++) ASSERT_EQ(y.f32()[(n * 99 + l) * 37 + c], x.f32()[(n * 37 + c) * 99 + l]);
  EXPECT_TRUE(test::allclose(ops::nlc_to_nchw(y, 9, 11), x, 0.f, 0.f));
  Tensor big = randt({2, 320, 64, 64}, 41);
  EXPECT_TRUE(test::allclose(ops::nlc_to_nchw(ops::nchw_to_nlc(big), 64, 64), big, 0.f, 0.f));
  Tensor b = randt({2, 37}, 42), xb = x.clone();
  ops::add_channel_bias_(xb, b);
  for (int64_t i = 0; i < x.numel(); i++) ASSERT_EQ(xb.f32()[i], x.f32()[i] + b.f32()[i / 99]);
}

// The vectorised f16 -> f32 conversion (F16C) equals the scalar one for all 65536 bit patterns
// (NaNs: both NaN; the hardware quiets signalling NaNs).
TEST(Tensor, F16ToF32AllValues) {
  std::vector<uint16_t> h(65536 + 5);
  for (size_t i = 0; i < h.size(); i++) h[i] = (uint16_t)(i * 40503u);  // a permutation, plus a ragged tail
  std::vector<float> f(h.size());
  convert_to_f32(h.data(), DType::F16, f.data(), (int64_t)h.size());
  for (size_t i = 0; i < h.size(); i++) {
    float ref = half_to_float(h[i]);
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(f[i])) << i;
    } else {
      ASSERT_EQ(std::memcmp(&ref, &f[i], 4), 0) << "f16 bits " << h[i] << ": " << f[i] << " vs " << ref;
    }
  }
}
