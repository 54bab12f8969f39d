#include "common.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

namespace easel::test {

std::string fixture(const std::string& rel) { return std::string(EASEL_FIXTURES) + "/" + rel; }

WeightStore load_ref(const std::string& rel) { return load_weights(fixture(rel)); }

float max_abs(const Tensor& t) {
  float m = 0;
  for (float v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, float atol, float rtol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  auto av = a.to_vector(), bv = b.to_vector();
  double worst = 0, max_diff = 0;
  size_t wi = 0;
  for (size_t i = 0; i < av.size(); i++) {
    double d = std::fabs((double)av[i] - bv[i]);
    if (!std::isfinite(av[i]) && std::isfinite(bv[i])) d = INFINITY;
    double excess = d - (atol + rtol * std::fabs(bv[i]));
    max_diff = std::max(max_diff, d);
    if (excess > worst || (std::isinf(d))) { worst = excess; wi = i; }
  }
  if (worst > 0)
    return ::testing::AssertionFailure() << "mismatch at flat index " << wi << ": " << av[wi] << " vs ref "
                                         << bv[wi] << " (max abs diff " << max_diff << ", atol " << atol
                                         << ", rtol " << rtol << ")";
  return ::testing::AssertionSuccess() << "max abs diff " << max_diff;
}

std::string ts_key(double ts) {
  char b[64];
  std::snprintf(b, sizeof b, "t%g", ts);
  std::string s = b;
  for (char& ch : s)
    if (ch == '.') ch = 'p';
  return s;
}

Tensor ramp(const Shape& s, float start) {
  std::vector<float> v(shape_numel(s));
  for (size_t i = 0; i < v.size(); i++) v[i] = start + 0.001f * (float)i;
  return Tensor::from_vector(v, s);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

namespace {
namespace fs = std::filesystem;
fs::path temp_root() { return fs::temp_directory_path() / ("easel_test_" + std::to_string(::getpid())); }
struct TempCleanup {
  ~TempCleanup() {
    std::error_code ec;
    fs::remove_all(temp_root(), ec);
  }
} temp_cleanup;
}  // namespace

std::string temp_dir(const std::string& name) {
  fs::path d = temp_root() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

void expect_image_close(const Image& img, const Tensor& u8) {
  ASSERT_EQ((size_t)u8.numel(), img.pixels.size());
  double sum = 0;
  int maxd = 0;
  for (size_t i = 0; i < img.pixels.size(); i++) {
    int d = std::abs((int)img.pixels[i] - (int)u8.data<uint8_t>()[i]);
    sum += d;
    maxd = std::max(maxd, d);
  }
  double mad = sum / img.pixels.size();
  EXPECT_LE(mad, 1.0) << "mean abs diff (of 255) " << mad << ", max " << maxd;
  EXPECT_LE(maxd, 2);
}

GenerateOptions tiny_options(bool sdxl) {
  GenerateOptions o;
  o.prompt = "a photo of a cat wearing a hat";
  o.negative_prompt = "blurry";
  o.cfg_scale = sdxl ? 5.0f : 7.5f;
  o.steps = sdxl ? 5 : 4;
  o.seed = 1234;
  o.sampler = "euler";
  o.width = o.height = 64;
  return o;
}

GenerateResult generate_and_compare(const Pipeline& pipe, GenerateOptions o, const std::string& ref_name) {
  WeightStore ref = load_ref(ref_name);
  std::vector<Tensor> steps;
  o.on_latents = [&](int, const Tensor& x) { steps.push_back(x.clone()); };
  GenerateResult r = pipe.generate(o);
  EXPECT_EQ(steps.size(), (size_t)ref.get("timesteps").numel()) << ref_name;
  for (size_t i = 0; i < steps.size() && ref.has("latents_" + std::to_string(i)); i++)
    EXPECT_TRUE(allclose(steps[i], ref.get("latents_" + std::to_string(i)), 6e-4f, 1e-4f)) << ref_name << " step " << i;
  EXPECT_TRUE(allclose(r.latents, ref.get("final_latents"), 6e-4f, 1e-4f)) << ref_name;
  expect_image_close(r.image, ref.get("image_u8"));
  return r;
}

}  // namespace easel::test
