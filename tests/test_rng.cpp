// RNG parity: torch CPU generator (tests/fixtures/rng/ref_randn.safetensors, bit-exact) and
// A1111 Philox (tests/fixtures/rng/ref_philox.json from tools/gen_philox_ref.py).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "sampling/rng.h"

using namespace easel;

namespace {

// Number of elements whose bit patterns differ.
int64_t bit_mismatches(const float* a, const float* b, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) bad += std::memcmp(a + i, b + i, 4) != 0;
  return bad;
}

Shape parse_shape(const std::string& s) {
  Shape shape;
  size_t p = 0;
  while (p <= s.size()) {
    size_t q = s.find('x', p);
    if (q == std::string::npos) q = s.size();
    shape.push_back(std::stoll(s.substr(p, q - p)));
    p = q + 1;
  }
  return shape;
}

}  // namespace

TEST(TorchCpuRng, FreshGeneratorMatchesTorchBitExact) {
  WeightStore ref = test::load_ref("rng/ref_randn.safetensors");
  int checked = 0;
  for (const auto& key : ref.keys_with_prefix("randn_s")) {
    // randn_s{seed}_{shape}
    size_t us = key.find('_', 7);
    uint64_t seed = std::stoull(key.substr(7, us - 7));
    Shape shape = parse_shape(key.substr(us + 1));
    const Tensor& want = ref.get(key, shape);
    auto rng = make_rng("torch-cpu", seed);
    Tensor got = rng->randn(shape);
    EXPECT_EQ(bit_mismatches(got.f32(), want.f32(), want.numel()), 0) << key;
    checked++;
  }
  EXPECT_EQ(checked, 55);
}

TEST(TorchCpuRng, SuccessiveCallsShareOneGenerator) {
  WeightStore ref = test::load_ref("rng/ref_randn.safetensors");
  // seq_a: seed 1234, five randn([1,4,8,8]) calls.
  auto a = make_rng("torch-cpu", 1234);
  for (int i = 0; i < 5; i++) {
    const Tensor& want = ref.get("seq_a_" + std::to_string(i), {1, 4, 8, 8});
    Tensor got = a->randn({1, 4, 8, 8});
    EXPECT_EQ(bit_mismatches(got.f32(), want.f32(), want.numel()), 0) << "seq_a_" << i;
  }
  // seq_b: seed 7, mixed sizes (the scalar path caches a second Box-Muller sample across calls).
  const std::vector<Shape> shapes = {{3}, {16}, {17}, {1, 4, 9, 7}, {5}, {1, 4, 8, 8}};
  auto b = make_rng("torch-cpu", 7);
  for (size_t i = 0; i < shapes.size(); i++) {
    const Tensor& want = ref.get("seq_b_" + std::to_string(i), shapes[i]);
    Tensor got = b->randn(shapes[i]);
    EXPECT_EQ(bit_mismatches(got.f32(), want.f32(), want.numel()), 0) << "seq_b_" << i;
  }
}

TEST(TorchCpuRng, RandMatchesTorch) {
  WeightStore ref = test::load_ref("rng/ref_randn.safetensors");
  for (uint64_t seed : {0ull, 42ull})
    for (const char* s : {"3", "16", "17", "1x4x9x7"}) {
      std::string key = "rand_s" + std::to_string(seed) + "_" + s;
      const Tensor& want = ref.get(key);
      TorchCpuRng g(seed);
      std::vector<float> got(want.numel());
      g.rand(got.data(), want.numel());
      EXPECT_EQ(bit_mismatches(got.data(), want.f32(), want.numel()), 0) << key;
    }
}

TEST(TorchCpuRng, ScalarVariantDiffersOnlySlightly) {
  // torch's portable kernel (ARM / ATEN_CPU_CAPABILITY=default) uses libm instead of the Cephes
  // polynomials: same uniforms, values within a few float ulps. (Bit-exactness of this variant
  // against torch with ATEN_CPU_CAPABILITY=default was checked by hand on glibc.)
  TorchCpuRng a(5), b(5, TorchCpuRng::Variant::Scalar);
  Tensor x = a.randn({2, 4, 16, 16}), y = b.randn({2, 4, 16, 16});
  EXPECT_TRUE(test::allclose(x, y, 2e-6f, 2e-6f));
  EXPECT_GT(bit_mismatches(x.f32(), y.f32(), x.numel()), 0);
}

TEST(PhiloxRng, MatchesNumpyPort) {
  std::ifstream f(test::fixture("rng/ref_philox.json"));
  ASSERT_TRUE(f.good());
  nlohmann::json j = nlohmann::json::parse(f);
  int64_t total = 0, mismatched = 0;
  double max_abs = 0;
  for (const auto& c : j["cases"]) {
    auto rng = make_rng("philox", std::stoull(c["seed"].get<std::string>()));
    for (const auto& call : c["values"]) {
      std::vector<float> want = call.get<std::vector<float>>();
      Tensor got = rng->randn({(int64_t)want.size()});
      for (size_t i = 0; i < want.size(); i++) {
        double d = std::fabs((double)got.f32()[i] - want[i]);
        max_abs = std::max(max_abs, d);
        mismatched += d != 0;
      }
      total += want.size();
    }
  }
  // The reference computes log/sin in float64 with numpy's (possibly SIMD) libm, then rounds to
  // float32; a 1-ulp float64 difference can flip that rounding in rare cases, nothing more.
  std::printf("philox: %lld of %lld values differ from the numpy port, max abs diff %.3g\n",
              (long long)mismatched, (long long)total, max_abs);
  EXPECT_LE(mismatched, total / 100) << "of " << total;
  EXPECT_LT(max_abs, 1e-6) << "max abs diff";
  EXPECT_EQ(total, 12 + 69 + 301 + 71 + 40 + 109);
}

TEST(PhiloxRng, KnownTorchCudaValues) {
  // A1111's modules/rng_philox.py docstring: torch.randn((3, 4), device="cuda") with seed 0.
  const float cuda[12] = {-0.92466259f, -0.42534415f, -2.6438457f, 0.14518388f,
                          -0.12086647f, -0.57972564f, -0.62285122f, -0.32838709f,
                          -1.07454231f, -0.36314407f, -1.67105067f, 2.26550497f};
  auto rng = make_rng("philox", 0);
  Tensor got = rng->randn({3, 4});
  for (int i = 0; i < 12; i++) EXPECT_NEAR(got.f32()[i], cuda[i], 5e-7f) << i;
}

TEST(Rng, UnknownKindThrows) { EXPECT_THROW(make_rng("mt", 1), Error); }
