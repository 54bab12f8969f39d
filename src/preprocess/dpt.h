// Blocks shared by the DPT depth networks (Depth Anything V2 and MiDaS DPT-Hybrid): the pre-LN ViT block, the
// reassemble layers that turn token grids into feature maps, the RefineNet-style fusion neck and the depth head.
// References:
//   DPT, "Vision Transformers for Dense Prediction" (Ranftl et al. 2021), https://arxiv.org/abs/2103.13413
//   https://github.com/isl-org/MiDaS midas/blocks.py, midas/vit.py (controlnet_aux 0.0.10 controlnet_aux/midas)
//   https://github.com/DepthAnything/Depth-Anything-V2 depth_anything_v2/dpt.py, util/blocks.py
//   timm vision_transformer.py Block; DINOv2 dinov2_layers/block.py (with LayerScale)
// Member names are the original layouts' checkpoint keys (transformers' layout is renamed into them by a table).
#pragma once
#include <array>
#include <string>

#include "models/nn.h"

namespace easel::pp::dpt {

// All tensors of a store as f32 (the networks compute in f32; small models are stored as f16).
WeightStore to_f32(const WeightStore& w);

// timm / DINOv2 Block: x += ls1 * proj(attn(norm1 x)); x += ls2 * fc2(gelu(fc1(norm2 x))). Fused qkv [3C, C].
struct VitBlock {
  nn::LayerNorm norm1, norm2;
  nn::Linear qkv, proj, fc1, fc2;  // attn.qkv, attn.proj, mlp.fc1, mlp.fc2
  Tensor ls1, ls2;                 // DINOv2 LayerScale gamma [C]; undefined for timm's ViT
  // prefix: "pretrained.blocks.3" (DINOv2) or "pretrained.model.blocks.3" (timm).
  void load(const WeightStore& w, const std::string& prefix, int64_t C, float eps, bool layer_scale);
  Tensor forward(const Tensor& x, int heads) const;  // x [B, L, C] -> [B, L, C]
};

// [B, 1+h*w, C] tokens -> [B, C, h, w] map of the patch tokens (the class token dropped).
Tensor tokens_to_map(const Tensor& t, int64_t h, int64_t w);
// MiDaS ProjectReadout: gelu(Linear(cat(patch tokens, class token))) -> [B, C, h, w].
Tensor project_readout(const Tensor& t, const nn::Linear& project, int64_t h, int64_t w);

// Reassemble: 1x1 projection, then x4 / x2 transposed conv (kernel = stride), nothing, or a 3x3 stride-2 conv.
struct Reassemble {
  nn::Conv2d project;
  Tensor up_w, up_b;  // ConvTranspose2d [c, c, f, f]
  int up = 0;         // factor of the transposed conv, 0 = none
  nn::Conv2d down;    // 3x3 stride 2 pad 1 when defined
  // project_key / resize_key: the two modules' prefixes; factor 4, 2, 1 or -2 (downsample).
  void load(const WeightStore& w, const std::string& project_key, const std::string& resize_key, int64_t in,
            int64_t out, int factor);
  Tensor forward(const Tensor& x) const;  // [B, in, h, w] -> [B, out, h*f, w*f]
};

// ResidualConvUnit: x + conv2(relu(conv1(relu(x)))).
struct Rcu {
  nn::Conv2d conv1, conv2;
  void load(const WeightStore& w, const std::string& prefix, int64_t c);
  Tensor forward(const Tensor& x) const;
};

// FeatureFusionBlock: (x + rcu1(skip)) -> rcu2 -> bilinear (align_corners) to (oh, ow) -> out_conv 1x1.
struct Fusion {
  Rcu rcu1, rcu2;  // resConfUnit1, resConfUnit2
  nn::Conv2d out_conv;
  void load(const WeightStore& w, const std::string& prefix, int64_t c);
  Tensor forward(const Tensor& x, const Tensor* skip, int64_t oh, int64_t ow) const;
};

// scratch.layer{1..4}_rn (3x3, no bias) and scratch.refinenet{1..4}: four maps -> path_1 at twice layer 1's size.
// refinenet4..2 resize to the next finer map's size (Depth Anything passes size=; MiDaS's scale_factor=2 gives the
// same size on its inputs, multiples of 32).
struct Neck {
  std::array<nn::Conv2d, 4> layer_rn;
  std::array<Fusion, 4> refinenet;  // [0] = refinenet1
  // prefix: "depth_head.scratch" or "scratch"; in: the four maps' channels; features: the neck width.
  void load(const WeightStore& w, const std::string& prefix, const std::array<int64_t, 4>& in, int64_t features);
  Tensor forward(const std::array<Tensor, 4>& layers) const;  // -> [B, features, 2*h1, 2*w1]
};

// Depth head: conv1 (3x3, F -> F/2), bilinear (align_corners) to (oh, ow), conv2 (3x3 -> 32), relu, conv3 (1x1 -> 1),
// relu. Returns [B, oh, ow].
struct Head {
  nn::Conv2d conv1, conv2, conv3;
  void load(const WeightStore& w, const std::string& k1, const std::string& k2, const std::string& k3, int64_t features);
  Tensor forward(const Tensor& x, int64_t oh, int64_t ow) const;
};

}  // namespace easel::pp::dpt
