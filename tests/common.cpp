#include "common.h"

#include <cmath>
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

}  // namespace easel::test
