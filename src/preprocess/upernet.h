// UperNet semantic segmentation (transformers' UperNetForSemanticSegmentation, e.g. openmmlab/upernet-convnext-small)
//   https://github.com/huggingface/transformers/blob/main/src/transformers/models/upernet/modeling_upernet.py
// Paper: Xiao et al., "Unified Perceptual Parsing for Scene Understanding", https://arxiv.org/abs/1807.10221
// Backbone: ConvNeXt (convnext.h). Decode head: PSP pooling on the last feature map (adaptive average pools,
// 1x1 ConvModules, bilinear back up, concat, 3x3 bottleneck) + FPN (1x1 laterals, top-down bilinear sums, 3x3 fpn
// convs, all levels bilinear to the finest, concat, 3x3 fpn_bottleneck) + 1x1 classifier; logits bilinear to the
// input size. ConvModule = conv (no bias) + BatchNorm (eps 1e-5) + ReLU. Bilinear everywhere: align_corners=False.
// The auxiliary (FCN) head only serves training and is not loaded.
#pragma once
#include <string>
#include <vector>

#include "preprocess/convnext.h"

namespace easel::pp {

struct UperNetConvModule {
  Tensor conv_weight;  // [O, I, k, k] (conv.bias absent in released models; used when present)
  Tensor conv_bias;
  Tensor bn_weight, bn_bias, bn_mean, bn_var;  // batch_norm.*: [O]
  int pad = 0;
  void load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int k);
  Tensor operator()(const Tensor& x) const;
};

struct UperNetConfig {
  std::vector<int> pool_scales{1, 2, 3, 6};
  int64_t hidden_size = 512;  // head channels (read from the weights)
  int64_t num_labels = 150;   // (read from the weights)
};

struct UperNet {
  UperNetConfig config;
  ConvNextBackbone backbone;
  std::vector<UperNetConvModule> psp_modules;  // decode_head.psp_modules.{i}.1
  UperNetConvModule bottleneck;                // decode_head.bottleneck
  std::vector<UperNetConvModule> lateral_convs, fpn_convs;
  UperNetConvModule fpn_bottleneck;
  Tensor classifier_weight, classifier_bias;  // decode_head.classifier: [L, hidden, 1, 1], [L]

  // config_json: the model's config.json ("" = none: pool scales (1, 2, 3, 6)); its backbone_config, when present,
  // must agree with the weights (hidden_sizes, depths, hidden_act "gelu").
  void load(const WeightStore& w, const std::string& config_json);
  // Feature maps of the backbone, for tests.
  std::vector<Tensor> features(const Tensor& pixel_values) const { return backbone(pixel_values); }
  // decode_head output [N, L, H/4, W/4] from the backbone features.
  Tensor decode_head(const std::vector<Tensor>& feats) const;
  // pixel_values [N, 3, H, W] (normalised) -> logits [N, L, H, W]
  Tensor operator()(const Tensor& pixel_values) const;
};

// transformers' SegformerImageProcessor (the image processor of the openmmlab/upernet-* repos), torchvision backend:
// resize to height x width (uint8, antialiased bilinear), then rescale / normalise in float32 (fused as
// (x - mean / rescale_factor) / (std / rescale_factor) when both are on).
struct SegImageProcessor {
  bool do_resize = true, do_rescale = true, do_normalize = true;
  int height = 512, width = 512;
  double rescale_factor = 1.0 / 255.0;
  double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};  // ImageNet
  // preprocessor_config.json ("" = the defaults above). Only bilinear resampling (resample 2) and a
  // {"height", "width"} size are supported; errors name the file and field.
  static SegImageProcessor load(const std::string& file);
  // rgb: HWC uint8, contiguous -> pixel_values [1, 3, height, width] (input size when do_resize is off)
  Tensor operator()(const uint8_t* rgb, int h, int w) const;
};

// post_process_semantic_segmentation: logits [1, L, h, w] bilinearly resized (align_corners=False) to oh x ow and
// argmax over L (first maximum wins, as torch.argmax), fused so that the resized logits are never stored.
// Returns the class per pixel, row-major [oh, ow].
std::vector<int32_t> segment_argmax(const Tensor& logits, int oh, int ow);

// transformers' image processors (torchvision backend) resize uint8 images with
// torch.nn.functional.interpolate(bilinear, antialias=True) on uint8, whose CPU kernel is PIL-SIMD's fixed-point
// resampler (ATen UpSampleKernel.cpp: double triangle-filter weights, support scaled when downscaling,
// normalised, rounded to int16 at the largest precision that fits; horizontal pass then vertical, each rounded
// and clamped to uint8). rgb: HWC uint8 (3 channels, contiguous) -> [oh, ow, 3] uint8.
std::vector<uint8_t> resize_bilinear_aa_u8(const uint8_t* rgb, int h, int w, int oh, int ow);

}  // namespace easel::pp
