// UNet2DConditionModel (SD1.x / SD2.x / SDXL base and refiner), diffusers naming.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/unets/unet_2d_condition.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/unets/unet_2d_blocks.py
// Papers: Rombach et al., https://arxiv.org/abs/2112.10752; SDXL (Podell et al.), https://arxiv.org/abs/2307.01952
// The down/mid blocks are separate structs so the ControlNet (a copy of the encoder half)
// can reuse them.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/blocks.h"
#include "models/config.h"

namespace easel {

// Debug/test hook: called with a diffusers module name ("down_blocks.0.resnets.1") and its output.
using UNetTrace = std::function<void(const std::string& name, const Tensor& out)>;

// CrossAttnDownBlock2D (with attentions) or DownBlock2D (without).
struct UNetDownBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;  // empty for DownBlock2D
  std::optional<Downsample2D> downsampler;     // "downsamplers.0"
  // level: index into the per-level config lists.
  void load(const WeightStore& w, const std::string& prefix, const UNetConfig& cfg, size_t level, int64_t in,
            int64_t out, int64_t temb_channels);
  // x [B, in, H, W] -> [B, out, H', W']; appends every output (resnet/attention pair, then the
  // downsampler's) to `skips`. `intrablock` (T2I-Adapter feature, may be null): see UNetExtras.
  Tensor forward(Tensor x, const Tensor& temb_act, const Tensor& context, std::vector<Tensor>& skips,
                 const Tensor* intrablock = nullptr, const UNetTrace* trace = nullptr,
                 const std::string& name = "") const;
};

// UNetMidBlock2DCrossAttn: resnets[0], then (attentions[i], resnets[i+1]) pairs.
struct UNetMidBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  void load(const WeightStore& w, const std::string& prefix, const UNetConfig& cfg, int64_t channels,
            int64_t temb_channels);
  Tensor forward(Tensor x, const Tensor& temb_act, const Tensor& context, const UNetTrace* trace = nullptr,
                 const std::string& name = "") const;  // [B, C, h, w]
};

// CrossAttnUpBlock2D / UpBlock2D: each resnet takes concat(x, skip) along channels.
struct UNetUpBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;  // empty for UpBlock2D
  std::optional<Upsample2D> upsampler;         // "upsamplers.0"
  void load(const WeightStore& w, const std::string& prefix, const UNetConfig& cfg, size_t level, int64_t in,
            int64_t out, int64_t prev_out, int64_t temb_channels, bool add_upsample);
  // Pops one skip per resnet from the back of `skips`.
  Tensor forward(Tensor x, const Tensor& temb_act, const Tensor& context, std::vector<Tensor>& skips,
                 const UNetTrace* trace = nullptr, const std::string& name = "") const;
};

// Optional inputs beyond (sample, t, context). Hooks for later features.
struct UNetExtras {
  // ControlNet: one residual per skip connection (conv_in + every down-block output: 12 for SD)
  // added to the skips, and one added to the mid-block output (diffusers'
  // down_block_additional_residuals / mid_block_additional_residual). Already scaled.
  const std::vector<Tensor>* down_residuals = nullptr;
  const Tensor* mid_residual = nullptr;
  // T2I-Adapter: features added inside the down blocks, in order (down_intrablock_additional_residuals):
  // after the last resnet/attention pair of a CrossAttnDownBlock2D, after a DownBlock2D (its last
  // skip included); a leftover one matching the mid-block output is added there.
  const std::vector<Tensor>* down_intrablock = nullptr;
  // SDXL added conditioning (addition_embed_type "text_time"), required there and rejected otherwise:
  // pooled text embeds [B, P] and time ids [B, n_ids] (base 6, refiner 5) with
  // P + n_ids * addition_time_embed_dim == projection_class_embeddings_input_dim.
  const Tensor* text_embeds = nullptr;
  const Tensor* time_ids = nullptr;
  // Called with every block's output under its diffusers module name (tests, debugging).
  UNetTrace trace;
};

// time_proj + time_embedding, plus for "text_time" configs (SDXL)
//   add_embedding(concat(text_embeds [B, P], add_time_proj(time_ids).reshape(B, n_ids * dim)))
// (add_time_proj: timestep_embedding of each id with addition_time_embed_dim channels and the config's
// flip_sin_to_cos / freq_shift). -> temb [B, 4*C0], before the SiLU. Shared with the ControlNet (same
// config fields and module names). add_embedding must be set exactly when cfg is "text_time"; a
// "text_time" call without text_embeds/time_ids, or with wrong shapes, throws. Traces "time_proj",
// "time_embedding" (without the added term), "add_time_proj" ([B*n_ids, dim]), "add_embedding", "temb".
Tensor unet_time_embed(const UNetConfig& cfg, const TimestepEmbedding& time_embedding,
                       const TimestepEmbedding* add_embedding, const std::vector<float>& timesteps,
                       const Tensor* text_embeds, const Tensor* time_ids, const UNetTrace* trace = nullptr);

struct UNet2DConditionModel {
  UNetConfig config;
  TimestepEmbedding time_embedding;  // [4*C0, C0] -> [4*C0, 4*C0]
  // SDXL (addition_embed_type "text_time"): [4*C0, projection_class_embeddings_input_dim] -> [4*C0, 4*C0]
  std::optional<TimestepEmbedding> add_embedding;
  nn::Conv2d conv_in;                // [C0, in_channels, 3, 3]
  std::vector<UNetDownBlock> down_blocks;
  UNetMidBlock mid_block;
  std::vector<UNetUpBlock> up_blocks;
  nn::GroupNorm conv_norm_out;  // [C0]
  nn::Conv2d conv_out;          // [out_channels, C0, 3, 3]

  void load(const WeightStore& w, const UNetConfig& cfg);
  // time_proj + time_embedding (+ SDXL add_embedding, see unet_time_embed): one timestep per batch
  // item -> [B, 4*C0] (before the SiLU).
  Tensor time_embed(const std::vector<float>& timesteps, const Tensor* text_embeds, const Tensor* time_ids,
                    const UNetTrace* trace = nullptr) const;
  Tensor time_embed(const std::vector<float>& timesteps, const UNetTrace* trace = nullptr) const {
    return time_embed(timesteps, nullptr, nullptr, trace);
  }
  // sample [B, in, h, w]; timesteps: one per batch item (or one for all); context [B, L, cross_dim]
  // -> [B, out, h, w]. h and w must be divisible by 2^(levels-1).
  Tensor forward(const Tensor& sample, const std::vector<float>& timesteps, const Tensor& context,
                 const UNetExtras* extras = nullptr) const;
};

}  // namespace easel
