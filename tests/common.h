// Test helpers: fixture paths and tensor comparison with max-abs / relative tolerances.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "core/tensor.h"
#include "io/image.h"
#include "io/weights.h"
#include "pipeline/pipeline.h"

namespace easel::test {

std::string fixture(const std::string& rel);  // EASEL_FIXTURES/rel
// Loads a reference dump (safetensors) written by tools/gen_fixtures.py.
WeightStore load_ref(const std::string& rel);
// Largest |x| (for tolerances scaled to a tensor's magnitude).
float max_abs(const Tensor& t);
// Asserts same shape and |a-b| <= atol + rtol*|b| elementwise; reports the worst element.
::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, float atol, float rtol);
// The reference dumps' key for a timestep: f"t{ts:g}" with '.' -> 'p' (tools/fixtures/dumps.py).
std::string ts_key(double ts);
// Distinct, non-zero values start, start+0.001, ... so that a wrong mapping cannot pass unnoticed.
Tensor ramp(const Shape& s, float start);
// The message of the exception f throws ("" when it throws none).
std::string error_of(const std::function<void()>& f);
// A fresh, empty folder under this process's temporary root (the root is removed at exit).
std::string temp_dir(const std::string& name);
// An 8-bit image against a reference [H, W, 3] u8 dump: mean abs difference <= 1 (of 255), max <= 2.
void expect_image_close(const Image& img, const Tensor& ref_u8);

// The settings of the diffusers pipeline runs behind the tiny-model end-to-end references (tools/fixtures):
// "a photo of a cat wearing a hat" / "blurry", euler, seed 1234, 64x64, cfg 7.5 and 4 steps (SD1) or 5 and 5 (SDXL).
GenerateOptions tiny_options(bool sdxl);
// Generates with `o` and compares with the reference dump `ref` (fixture-relative): every step's latents and the
// final latents within the fp32 order error amplified by guidance and sigma (6e-4 + 1e-4 relative; a wrong
// formula is off by 0.1-1), and the 8-bit image within 1/255 mean (expect_image_close). Returns the result.
GenerateResult generate_and_compare(const Pipeline& pipe, GenerateOptions o, const std::string& ref);

}  // namespace easel::test

// Expects `expr` to throw an exception whose message contains `needle`.
#define EXPECT_ERROR(expr, needle)                                                      \
  do {                                                                                  \
    std::string msg_ = ::easel::test::error_of([&] { (void)(expr); });                  \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: '" << msg_ << "'";    \
  } while (0)

namespace easel::test {

// The settings of the diffusers pipeline runs behind the tiny-model end-to-end references (tools/fixtures):
// "a photo of a cat wearing a hat" / "blurry", euler, seed 1234, 64x64, cfg 7.5 and 4 steps (SD1) or 5 and 5 (SDXL).
GenerateOptions tiny_options(bool sdxl);
// Generates with `o` and compares with the reference dump `ref` (fixture-relative): every step's latents and the
// final latents within the fp32 order error amplified by guidance and sigma (6e-4 + 1e-4 relative; a wrong
// formula is off by 0.1-1), and the 8-bit image within 1/255 mean (expect_image_close). Returns the result.
GenerateResult generate_and_compare(const Pipeline& pipe, GenerateOptions o, const std::string& ref);

}  // namespace easel::test
