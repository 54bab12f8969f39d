// Vision ops (conv2d_ex, conv_transpose2d, pooling, interpolation, batch norm, sigmoid) against
// torch.nn.functional on odd shapes (tests/fixtures/vision_ops, tools/fixtures/vision_ops.py).
#include "common.h"
#include "ops/ops.h"

using namespace easel;
using easel::test::allclose;

namespace {

const WeightStore& ref() {
  static const WeightStore r = test::load_ref("vision_ops/ref.safetensors");
  return r;
}
Tensor R(const std::string& k) { return ref().get(k).to(DType::F32); }

}  // namespace

TEST(VisionOps, ConvGroupedDilatedAsymmetric) {
  ops::ConvParams p;
  p.stride_h = 2, p.stride_w = 1, p.pad_l = 1, p.pad_r = 2, p.pad_t = 0, p.pad_b = 1;
  p.dilation_h = p.dilation_w = 2, p.groups = 3;
  EXPECT_TRUE(allclose(ops::conv2d_ex(R("x"), R("conv_g3_w"), R("conv_g3_b"), p), R("conv_g3_y"), 1e-5f, 1e-5f));
  EXPECT_TRUE(allclose(ops::conv2d_ex(R("x"), R("conv_dw_w"), Tensor(), ops::ConvParams::same(1, 3, 6)),
                       R("conv_dw_y"), 1e-5f, 1e-5f));
  // f16 weights take the same path (converted once when packed).
  EXPECT_TRUE(allclose(ops::conv2d_ex(R("x"), R("conv_dw_w").to(DType::F16), Tensor(), ops::ConvParams::same(1, 3, 6)),
                       R("conv_dw_y"), 2e-3f, 2e-3f));
  EXPECT_ERROR(ops::conv2d_ex(R("x"), R("conv_g3_w"), Tensor(), ops::ConvParams::same(1, 1, 2)), "does not match");
}

TEST(VisionOps, ConvTranspose) {
  struct C { const char* name; int k, s, p, op; };
  for (C c : {C{"k4s4", 4, 4, 0, 0}, C{"k2s2", 2, 2, 0, 0}, C{"k3s2p1o1", 3, 2, 1, 1}}) {
    const std::string n = std::string("deconv_") + c.name;
    EXPECT_TRUE(allclose(ops::conv_transpose2d(R("x"), R(n + "_w"), R(n + "_b"), c.s, c.p, c.op), R(n + "_y"), 1e-5f,
                         1e-5f))
        << n;
  }
  EXPECT_ERROR(ops::conv_transpose2d(R("x"), R("conv_g3_w"), Tensor(), 2, 0), "does not match");
}

TEST(VisionOps, Pooling) {
  EXPECT_TRUE(allclose(ops::max_pool2d(R("x"), 2, 2), R("maxpool_k2s2"), 0, 0));
  EXPECT_TRUE(allclose(ops::max_pool2d(R("x"), 3, 2, 1, true), R("maxpool_k3s2p1_ceil"), 0, 0));
  EXPECT_TRUE(allclose(ops::max_pool2d(R("x"), 2, 2, 0, true), R("maxpool_k2s2_ceil"), 0, 0));
  for (int s : {1, 2, 3, 6})
    EXPECT_TRUE(allclose(ops::adaptive_avg_pool2d(R("x"), s, s), R("adapt_" + std::to_string(s)), 1e-6f, 1e-5f)) << s;
  EXPECT_ERROR(ops::max_pool2d(R("x"), 40, 1), "too small");
}

TEST(VisionOps, Interpolate) {
  const Tensor x = R("x");
  EXPECT_TRUE(allclose(ops::interpolate_bilinear(x, 23, 9, true), R("bilinear_ac"), 1e-6f, 1e-5f));
  EXPECT_TRUE(allclose(ops::interpolate_bilinear(x, 23, 9, false), R("bilinear"), 1e-6f, 1e-5f));
  // scale_factor (1.7, 2.3): output floor(11*1.7) x floor(13*2.3) = 18 x 29, coordinates mapped by 1/scale.
  EXPECT_TRUE(allclose(ops::interpolate_bilinear(x, 18, 29, false, 1.7, 2.3), R("bilinear_sf"), 1e-6f, 1e-5f));
  EXPECT_TRUE(allclose(ops::interpolate_bicubic(x, 23, 9, true), R("bicubic_ac"), 1e-5f, 1e-5f));
  EXPECT_TRUE(allclose(ops::interpolate_bicubic(x, 23, 9, false), R("bicubic"), 1e-5f, 1e-5f));
  EXPECT_TRUE(allclose(ops::interpolate_bicubic(x, 18, 29, false, 1.7, 2.3), R("bicubic_sf"), 1e-5f, 1e-5f));
  // Without the scale the coordinate map differs (in/out ratio): the test above can fail.
  EXPECT_FALSE(allclose(ops::interpolate_bilinear(x, 18, 29, false), R("bilinear_sf"), 1e-4f, 1e-4f));
}

TEST(VisionOps, BatchNormSigmoid) {
  EXPECT_TRUE(allclose(ops::batch_norm(R("x"), R("bn_mean"), R("bn_var"), R("bn_g"), R("bn_b"), 1e-5f), R("bn_y"),
                       1e-5f, 1e-5f));
  EXPECT_TRUE(allclose(ops::sigmoid(ops::scale(R("x"), 4.f)), R("sigmoid"), 1e-6f, 1e-5f));
  Tensor r = ops::relu(R("x"));
  for (int64_t i = 0; i < r.numel(); i++) ASSERT_EQ(r.f32()[i], std::max(R("x").f32()[i], 0.f));
}
