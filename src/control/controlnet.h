// ControlNetModel (SD1.x / SD2.x / SDXL full, mid and small), diffusers naming. The encoder is the
// UNet's own code (UNetDownBlock, UNetMidBlock, unet_time_embed); only the hint embedding and the
// 1x1 "zero convs" are ControlNet-specific.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/controlnets/controlnet.py
//   https://github.com/lllyasviel/ControlNet (cldm/cldm.py: input_hint_block, zero_convs, middle_block_out)
// Paper: Zhang et al., "Adding Conditional Control to Text-to-Image Diffusion Models",
//   https://arxiv.org/abs/2302.05543
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/unet.h"

namespace easel {

struct ControlNetConfig {  // diffusers ControlNetModel config.json
  // The encoder half of a UNet: block_out_channels, down_block_types, layers_per_block, heads,
  // transformer_layers_per_block, cross_attention_dim, use_linear_projection, norm_*, flip_sin_to_cos,
  // freq_shift, addition_embed_type / addition_time_embed_dim / projection_class_embeddings_input_dim
  // (SDXL). in_channels is the latent's. up_block_types and out_channels are unused.
  UNetConfig unet;
  int conditioning_channels = 3;
  std::vector<int> conditioning_embedding_out_channels = {16, 32, 96, 256};
  // mid_block_type: "UNetMidBlock2DCrossAttn" (true) or "UNetMidBlock2D" (false: one resnet, no attention).
  bool mid_block_attention = true;
  bool global_pool_conditions = false;  // outputs averaged over H, W (shuffle v1.1)
  bool bgr = false;                     // controlnet_conditioning_channel_order "bgr": the guide is flipped to BGR
  // The base model family it belongs to ("sd1", "sd2", "sdxl"), from config/weights; "" when unknown.
  std::string family;
};

// ControlNetConditioningEmbedding: conv_in -> SiLU -> (blocks[2k] 3x3 -> SiLU -> blocks[2k+1] 3x3
// stride 2 -> SiLU)* -> conv_out. [B, cond_ch, H, W] in [0, 1] -> [B, C0, H/2^n, W/2^n] (n = 3 for SD).
struct ControlNetConditioningEmbedding {
  nn::Conv2d conv_in;              // [c[0], cond_ch, 3, 3]
  std::vector<nn::Conv2d> blocks;  // [c[k], c[k], 3, 3], [c[k+1], c[k], 3, 3] stride 2
  nn::Conv2d conv_out;             // [C0, c[-1], 3, 3]
  void load(const WeightStore& w, const std::string& prefix, int64_t cond_channels, const std::vector<int>& ch,
            int64_t out_channels);
  Tensor operator()(const Tensor& cond) const;
};

// Unscaled ControlNet outputs for one call: one residual per UNet skip (conv_in + every down-block
// output: 12 for SD1/SD2, 9 for SDXL) and the mid-block residual. Scaling (strength, guess mode,
// soft weights) is the caller's (control/control_unit.h).
struct ControlNetOutput {
  std::vector<Tensor> down;  // [B, C_i, h_i, w_i]
  Tensor mid;                // [B, C_last, h/2^(levels-1), w/2^(levels-1)]
};

struct ControlNetModel {
  ControlNetConfig config;
  std::string source;  // file or folder, for messages
  TimestepEmbedding time_embedding;                  // [4*C0, C0] -> [4*C0, 4*C0]
  std::optional<TimestepEmbedding> add_embedding;    // SDXL "text_time"
  nn::Conv2d conv_in;                                // [C0, in_channels, 3, 3]
  ControlNetConditioningEmbedding controlnet_cond_embedding;
  std::vector<UNetDownBlock> down_blocks;
  UNetMidBlock mid_block;                            // resnets only (1) without mid-block attention
  std::vector<nn::Conv2d> controlnet_down_blocks;   // "zero convs": [C_i, C_i, 1, 1], one per skip
  nn::Conv2d controlnet_mid_block;                   // [C_last, C_last, 1, 1]

  // Builds the model from diffusers-named weights (tensors are shared, not copied). Shapes are
  // checked against cfg; errors name w.source and the key.
  void load(const WeightStore& w, const ControlNetConfig& cfg);
  // The hint embedding of a guide image [B, 3, H, W] in [0, 1] (RGB; flipped here for "bgr"
  // models) -> [B, C0, H/8, W/8]. It does not depend on the step, so callers compute it once.
  Tensor embed_condition(const Tensor& guide01) const;
  // sample [B, in, h, w], timesteps (one per item or one for all), context [B, L, cross_dim],
  // cond_embedding from embed_condition ([B or 1, C0, h, w]; a batch of 1 is broadcast),
  // SDXL: text_embeds [B, P], time_ids [B, n]. Returns the unscaled outputs (global pooling applied
  // when the config asks for it: each channel's H, W mean at every position). trace: module names as diffusers.
  ControlNetOutput forward(const Tensor& sample, const std::vector<float>& timesteps, const Tensor& context,
                           const Tensor& cond_embedding, const Tensor* text_embeds = nullptr,
                           const Tensor* time_ids = nullptr, const UNetTrace* trace = nullptr) const;
  // Number of down residuals (= the UNet's skips).
  size_t num_down_residuals() const { return controlnet_down_blocks.size(); }
};

// The ControlNet config of a diffusers-named store without config.json: every size from the
// shapes; heads from the family's convention (sd1: 8 per level; sd2/sdxl: 64-dim heads). `family`
// "" = guess it from the weights (add_embedding -> sdxl, cross-attention 1024 -> sd2, else sd1).
ControlNetConfig controlnet_config_from_weights(const WeightStore& w, const std::string& family = "");
// A ControlNet config that copies a UNet's encoder (ControlNetModel.from_unet; Control-LoRA).
ControlNetConfig controlnet_config_from_unet(const UNetConfig& unet, const std::string& family);
// Parses a diffusers ControlNet config.json (fields absent keep defaults).
ControlNetConfig parse_controlnet_config(const std::string& file);
// lllyasviel / LDM ControlNet keys ("control_model." stripped or absent: input_blocks.*,
// middle_block.*, time_embed.*, label_emb.*, input_hint_block.*, zero_convs.N.0.*,
// middle_block_out.0.*) -> diffusers names, as diffusers.
// convert_controlnet_checkpoint). Keys it cannot place are appended to `unknown`.
WeightStore controlnet_from_ldm(const WeightStore& ldm, std::vector<std::string>& unknown);

// Loads a ControlNet from any of: a diffusers folder (config.json + diffusion_pytorch_model
// .safetensors/.bin, fp16 variants), a diffusers-keyed single file, an lllyasviel file
// (.pth/.ckpt/.safetensors, "control_model.*" or bare LDM keys, v1.0 and v1.1). With `base`, the
// ControlNet must fit that model (family, cross-attention width, SDXL added conditioning, levels):
// otherwise an Error naming the file and both families. Missing/truncated files: Error naming the file.
// A single file's sibling .yaml (lllyasviel's) with "global_average_pooling: True" turns on global pooling.
ControlNetModel load_controlnet(const std::string& path, const ModelConfig* base = nullptr);
// True when a weight store looks like a ControlNet in either layout (for `easel info` and dispatch).
bool is_controlnet_store(const WeightStore& w);
// For `easel info`: "" when `path` is not a ControlNet (file or diffusers folder), else its layout, base
// family, levels, attention depths, hint channels, global pooling and parameter count.
std::string describe_controlnet(const std::string& path);

}  // namespace easel
