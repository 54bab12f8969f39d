// HED soft edges as ControlNet v1.1's annotator (lllyasviel's Apache-2.0 re-implementation, ControlNetHED.pth from
// lllyasviel/Annotators): controlnet_aux/hed/__init__.py (ControlNetHED_Apache2, HEDdetector) and
// sd-webui-controlnet annotator/hed + scripts/processor.py (hed, hed_safe, scribble_hed).
// Paper: Xie & Tu, "Holistically-Nested Edge Detection", https://arxiv.org/abs/1504.06375
// Network: x (RGB, 0..255) - norm; five DoubleConvBlocks (3x3 conv + ReLU, 2-3 times; 2x2 max pool before blocks
// 2-5), each with a 1x1 projection to one channel. The edge: each projection bilinearly resized to the input size
// (cv2.resize INTER_LINEAR), averaged in float32, sigmoid in float64.
#pragma once
#include <cstdint>
#include <vector>

#include "models/nn.h"

namespace easel::pp {

struct HedNet {
  Tensor norm;  // [1, 3, 1, 1]
  struct Block {
    std::vector<nn::Conv2d> convs;  // blockN.convs.K: [C, C_in, 3, 3], pad 1
    nn::Conv2d projection;          // blockN.projection: [1, C, 1, 1]
  };
  std::vector<Block> blocks;  // block1..block5 (widths from the weights: 64, 128, 256, 512, 512 in the release)
  void load(const WeightStore& w);
  // x [1, 3, H, W] (RGB 0..255) -> 5 projections [1, 1, H / 2^i, W / 2^i] (floor per pooling)
  std::vector<Tensor> operator()(const Tensor& x) const;
};

// apply_hed up to the float edge: rgb HWC uint8 [h, w, 3] -> edge [h * w] in (0, 1) (float64, as numpy).
std::vector<double> hed_edge(const HedNet& net, const uint8_t* rgb, int h, int w);

}  // namespace easel::pp
