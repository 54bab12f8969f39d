// MiDaS v3 DPT-Hybrid (dpt_hybrid-midas-501f0c75.pt, the depth model ControlNet v1.1's depth was trained with):
// a ViT-B/16 whose patch embedding is a ResNet-50 (BiT ResNetV2: weight-standardised convs with TF "same" padding,
// GroupNorm 32) stem of 3 stages; DPT neck on [stage 1, stage 2, block 8, block 11] with "project" readout.
//   Paper: https://arxiv.org/abs/2103.13413; code: https://github.com/isl-org/MiDaS (midas/dpt_depth.py, vit.py,
//   blocks.py), as packaged by controlnet_aux 0.0.10 (controlnet_aux/midas) on timm 1.0.31
//   (vision_transformer_hybrid.py _resnetv2, resnetv2.py ResNetV2 / Bottleneck / create_resnetv2_stem 'same',
//   layers/std_conv.py StdConv2dSame (eps 1e-8), layers/padding.py pad_same, pool2d_same.py MaxPool2dSame).
// Keys (the original .pt): pretrained.model.{cls_token, pos_embed, patch_embed.backbone.stem/stages.*,
// patch_embed.proj, blocks.N.*}, pretrained.act_postprocess{3,4}.*, scratch.{layerN_rn, refinenetN, output_conv.*}.
// Sizes come from the weights (ViT width, heads of 64, blocks; ResNet stage widths and depths); the tapped ViT blocks
// are the last and the fourth from last (8 and 11 of 12).
#pragma once
#include <array>
#include <string>
#include <vector>

#include "preprocess/dpt.h"

namespace easel::pp {

// Conv2d with weight standardisation (folded in at load) and TF "same" padding computed from the input size.
struct StdConvSame {
  Tensor weight;  // [O, I, k, k], standardised: (w - mean) / sqrt(var + 1e-8) per output channel
  int k = 1, stride = 1;
  void load(const WeightStore& w, const std::string& key, int64_t in, int64_t out, int k_, int stride_);
  Tensor operator()(const Tensor& x) const;
};

struct ResNetBottleneck {  // timm ResNetV2 Bottleneck (non-pre-activation)
  StdConvSame conv1, conv2, conv3, down_conv;  // conv2 carries the stride
  nn::GroupNorm norm1, norm2, norm3, down_norm;
  bool has_down = false;
  Tensor forward(const Tensor& x) const;  // relu(norm3(conv3(...)) + shortcut)
};

struct DptHybrid {
  std::string source;
  int64_t C = 0;
  int heads = 0;
  std::array<int, 2> taps{};  // ViT blocks feeding layers 3 and 4

  StdConvSame stem_conv;  // patch_embed.backbone.stem.conv 7x7 s2, then norm + relu, 3x3 s2 same max pool
  nn::GroupNorm stem_norm;
  std::vector<std::vector<ResNetBottleneck>> stages;  // 3 stages, strides 1, 2, 2
  nn::Conv2d patch_proj;  // patch_embed.proj 1x1: stage-3 features -> C
  Tensor cls_token, pos_embed;  // [1, 1, C], [1, 1 + g*g, C]
  std::vector<dpt::VitBlock> blocks;
  std::array<nn::Linear, 2> readout;  // act_postprocess{3,4}.0.project.0 (2C -> C, then GELU)
  std::array<dpt::Reassemble, 2> post;  // act_postprocess3.3; act_postprocess4.3 + .4 (3x3 s2)
  dpt::Neck neck;                       // scratch
  dpt::Head head;                       // scratch.output_conv.{0,2,4}

  static DptHybrid load(const std::string& path);
  // x [1, 3, H, W] = rgb / 127.5 - 1 (H, W multiples of 32) -> depth [1, H, W] (inverse relative depth, >= 0).
  Tensor forward(const Tensor& x) const;
};

bool is_dpt_hybrid(const WeightStore& w);

}  // namespace easel::pp
