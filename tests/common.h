// Test helpers: fixture paths and tensor comparison with max-abs / relative tolerances.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "core/tensor.h"
#include "io/weights.h"

namespace easel::test {

std::string fixture(const std::string& rel);  // EASEL_FIXTURES/rel
// Loads a reference dump (safetensors) written by tools/gen_fixtures.py.
WeightStore load_ref(const std::string& rel);
// Largest |x| (for tolerances scaled to a tensor's magnitude).
float max_abs(const Tensor& t);
// Asserts same shape and |a-b| <= atol + rtol*|b| elementwise; reports the worst element.
::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, float atol, float rtol);

}  // namespace easel::test
