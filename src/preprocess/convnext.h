// ConvNeXt backbone as transformers' ConvNextBackbone (the `backbone.` of UperNetForSemanticSegmentation):
//   https://github.com/huggingface/transformers/blob/main/src/transformers/models/convnext/modeling_convnext.py
// Paper: Liu et al., "A ConvNet for the 2020s", https://arxiv.org/abs/2201.03545
// Stem: patch conv (k = stride = patch) + channels-first LayerNorm; stages: (LayerNorm + 2x2 stride-2 conv for
// stages > 0) then blocks [7x7 depthwise conv, channels-last LayerNorm, Linear 4C, GELU, Linear C, layer scale,
// residual]. Every LayerNorm uses eps 1e-6. Outputs: each stage's output through hidden_states_norms.stageN.
#pragma once
#include <string>
#include <vector>

#include "models/nn.h"

namespace easel::pp {

struct ConvNextLayer {
  Tensor dwconv_weight, dwconv_bias;  // [C, 1, 7, 7], [C]
  nn::LayerNorm layernorm;            // [C], channels last
  nn::Linear pwconv1, pwconv2;        // [4C, C], [C, 4C]
  Tensor layer_scale_parameter;       // [C] or undefined (layer_scale_init_value 0)
  void load(const WeightStore& w, const std::string& prefix, int64_t c);
  Tensor operator()(const Tensor& x) const;  // [N, C, H, W] -> same
};

struct ConvNextStage {
  nn::LayerNorm down_norm;  // downsampling_layer.0 (channels first), stages > 0 only
  Tensor down_weight, down_bias;  // downsampling_layer.1: [C, C_prev, 2, 2] stride 2
  std::vector<ConvNextLayer> layers;
};

struct ConvNextBackbone {
  // Read from the weight shapes (config.json is cross-checked by the caller).
  std::vector<int64_t> hidden_sizes;  // per stage
  std::vector<int> depths;            // blocks per stage
  int patch_size = 4;
  Tensor patch_weight, patch_bias;  // embeddings.patch_embeddings: [C0, 3, p, p]
  nn::LayerNorm embed_norm;         // embeddings.layernorm (channels first)
  std::vector<ConvNextStage> stages;
  std::vector<nn::LayerNorm> out_norms;  // hidden_states_norms.stage1..N (channels first)

  // prefix: "backbone". Every stage must have its hidden_states_norms entry (out_features = all stages).
  void load(const WeightStore& w, const std::string& prefix);
  // x [N, 3, H, W] -> per stage [N, C_i, H / (p * 2^i), W / (p * 2^i)]
  std::vector<Tensor> operator()(const Tensor& x) const;
};

// LayerNorm over the channels of an NCHW tensor (ConvNextLayerNorm, data_format="channels_first").
Tensor layer_norm_channels_first(const Tensor& x, const nn::LayerNorm& ln);

}  // namespace easel::pp
