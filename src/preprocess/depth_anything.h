// Depth Anything V2 (relative depth): a DINOv2 ViT (patch 14, LayerScale) with a DPT head.
//   Paper: https://arxiv.org/abs/2406.09414; code: https://github.com/DepthAnything/Depth-Anything-V2
//   (depth_anything_v2/dpt.py DepthAnythingV2, dinov2.py); transformers DepthAnythingForDepthEstimation
//   (models/depth_anything, dinov2) and its convert_depth_anything_to_hf.py key table.
// Two layouts of the same weights:
//   original (depth_anything_v2_vit{s,b,l}.pth, or A1111's depth_anything_v2_vitl.safetensors): pretrained.* (DINOv2:
//     blocks.N.attn.qkv, ls1.gamma...), depth_head.* (projects, resize_layers, scratch.layerN_rn, refinenetN,
//     output_conv1, output_conv2.{0,2});
//   transformers (config.json + model.safetensors, e.g. depth-anything/Depth-Anything-V2-Small-hf): backbone.*,
//     neck.*, head.*; renamed into the original keys by one table (query/key/value concatenated into qkv).
// The size comes from the weights: width 384/768/1024 = vits/vitb/vitl, heads of 64, blocks counted; the four tapped
// blocks are the original's table ([2,5,8,11] for 12 blocks, [4,11,17,23] for 24), or config.json's out_indices.
// The layouts differ in one detail, kept here: the original interpolates the position embeddings with
// scale_factor (n + 0.1) / sqrt(N) (DINOv2's interpolate_offset), transformers with size n; both skip it on a square
// input of the native grid (518x518 for the released models).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "preprocess/dpt.h"

namespace easel::pp {

struct DepthAnythingV2 {
  std::string source, layout, variant;  // file, "original" / "transformers", "vits" / "vitb" / "vitl" / "custom"
  int64_t C = 0;                         // ViT width
  int heads = 0, patch = 14;
  float eps = 1e-6f;
  std::array<int, 4> taps{};  // blocks whose (normed) outputs feed the head
  bool offset_pos_interp = true;  // original: scale_factor with DINOv2's 0.1 offset; transformers: size

  nn::Conv2d patch_embed;           // pretrained.patch_embed.proj [C, 3, 14, 14], stride 14
  Tensor cls_token, pos_embed;      // [1, 1, C], [1, 1 + M*M, C]
  std::vector<dpt::VitBlock> blocks;
  nn::LayerNorm norm;               // pretrained.norm, applied to each tapped block
  std::array<dpt::Reassemble, 4> reassemble;  // depth_head.projects.i + resize_layers.i
  dpt::Neck neck;                   // depth_head.scratch
  dpt::Head head;                   // output_conv1, output_conv2.0, output_conv2.2

  // A weight file in either layout, or a transformers folder (model.safetensors; config.json read when present).
  static DepthAnythingV2 load(const std::string& path);
  // x [1, 3, H, W] (ImageNet-normalised RGB; H, W multiples of 14) -> relative depth [1, H, W] (>= 0).
  Tensor forward(const Tensor& x) const;
};

// The network input the A1111 annotator (annotator/depth_anything_v2.py) builds from its padded RGB image:
// cv2.COLOR_BGR2RGB on the RGB image (it expects BGR, so the network sees the channels swapped, as in A1111), / 255
// (float64), Resize (keep aspect, lower bound 518, multiple of 14, INTER_CUBIC), ImageNet (x - mean) / std, float32.
// rgb: h x w packed 8-bit RGB rows -> [1, 3, h', w'].
Tensor depth_anything_input(const uint8_t* rgb, int h, int w);

// True when the store holds Depth Anything V2 weights (either layout).
bool is_depth_anything(const WeightStore& w);

}  // namespace easel::pp
