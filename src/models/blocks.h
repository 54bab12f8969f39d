// Building blocks shared by the UNet, VAE and ControlNet, written once, named after the
// diffusers module keys (the checkpoint loader renames LDM files into these names).
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/resnets.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/attention.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/transformers/transformer_2d.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/embeddings.py
// Paper: Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models",
//   https://arxiv.org/abs/2112.10752
// Activations are f32 NCHW (images) or [B, L, C] (tokens); weights stay in the store's dtype.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "models/nn.h"

namespace easel {

// Sinusoidal timestep embedding (diffusers get_timestep_embedding, max_period 10000).
// timesteps: one value per batch item -> [B, dim] f32. Computed in f32 like torch.
Tensor timestep_embedding(const std::vector<float>& timesteps, int dim, bool flip_sin_to_cos,
                          float downscale_freq_shift, float scale = 1.0f, float max_period = 10000.0f);

// TimestepEmbedding: linear_1 -> SiLU -> linear_2.  [B, in] -> [B, out]
struct TimestepEmbedding {
  nn::Linear linear_1;  // [out, in]
  nn::Linear linear_2;  // [out, out]
  void load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out);
  Tensor operator()(const Tensor& x) const;
};

// ResnetBlock2D (time_scale_shift "default", output_scale_factor 1).
// norm1+SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2+SiLU -> conv2, plus the shortcut
// (1x1 conv_shortcut when in != out).
struct ResnetBlock2D {
  nn::GroupNorm norm1;                   // [in]
  nn::Conv2d conv1;                      // [out, in, 3, 3]
  std::optional<nn::Linear> time_emb_proj;  // [out, temb]; absent in the VAE
  nn::GroupNorm norm2;                   // [out]
  nn::Conv2d conv2;                      // [out, out, 3, 3]
  std::optional<nn::Conv2d> conv_shortcut;  // [out, in, 1, 1] when in != out
  // temb_channels 0 = no time embedding (VAE).
  void load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int64_t temb_channels,
            int groups, float eps);
  // x [B, in, H, W], temb_act = SiLU(temb) [B, temb] or undefined -> [B, out, H, W]
  Tensor operator()(const Tensor& x, const Tensor& temb_act) const;
};

// Downsample2D with use_conv: stride-2 3x3 conv `conv`. The UNet pads 1 on every side; the VAE
// (padding=0) pads (0, 1, 0, 1) (right and bottom only) and convolves without padding.
struct Downsample2D {
  nn::Conv2d conv;  // [C, C, 3, 3]
  bool asymmetric = false;
  void load(const WeightStore& w, const std::string& prefix, int64_t channels, bool vae_padding);
  Tensor operator()(const Tensor& x) const;  // [B, C, H, W] -> [B, C, H/2, W/2]
};

// Upsample2D with use_conv: nearest 2x then 3x3 conv `conv`.
struct Upsample2D {
  nn::Conv2d conv;  // [C, C, 3, 3]
  void load(const WeightStore& w, const std::string& prefix, int64_t channels);
  Tensor operator()(const Tensor& x) const;  // [B, C, H, W] -> [B, C, 2H, 2W]
};

// diffusers Attention (AttnProcessor): to_q/to_k/to_v (no bias), to_out.0 (bias); heads packed
// in the channel dim, scale 1/sqrt(dim_head). Self-attention when context is undefined.
struct Attention {
  nn::Linear to_q;    // [inner, query_dim]
  nn::Linear to_k;    // [inner, context_dim]
  nn::Linear to_v;    // [inner, context_dim]
  nn::Linear to_out;  // "to_out.0" [query_dim, inner]
  int heads = 1;
  void load(const WeightStore& w, const std::string& prefix, int64_t query_dim, int64_t context_dim, int heads,
            int64_t dim_head, bool qkv_bias = false);
  // x [B, L, query_dim], context [B, S, context_dim] or undefined -> [B, L, query_dim]
  Tensor operator()(const Tensor& x, const Tensor& context = Tensor()) const;
};

// FeedForward with GEGLU: ff.net.0.proj [2*inner, dim] -> x*gelu(gate) -> ff.net.2 [dim, inner].
struct FeedForward {
  nn::Linear net_0_proj;  // "net.0.proj"
  nn::Linear net_2;       // "net.2"
  void load(const WeightStore& w, const std::string& prefix, int64_t dim, int64_t inner);
  Tensor operator()(const Tensor& x) const;  // [B, L, dim] -> [B, L, dim]
};

// BasicTransformerBlock (layer_norm type): x += attn1(norm1 x); x += attn2(norm2 x, ctx); x += ff(norm3 x).
struct BasicTransformerBlock {
  nn::LayerNorm norm1, norm2, norm3;  // [dim]
  Attention attn1;                    // self
  Attention attn2;                    // cross
  FeedForward ff;
  void load(const WeightStore& w, const std::string& prefix, int64_t dim, int heads, int64_t dim_head,
            int64_t cross_dim);
  Tensor operator()(Tensor x, const Tensor& context) const;  // x [B, L, dim], context [B, S, cross]
};

// Transformer2DModel (the LDM SpatialTransformer): GroupNorm(eps 1e-6) -> proj_in (1x1 conv, or
// linear with use_linear_projection) -> transformer_blocks -> proj_out -> + residual.
struct Transformer2DModel {
  nn::GroupNorm norm;
  bool linear_proj = false;
  nn::Conv2d proj_in_conv, proj_out_conv;      // [inner, C, 1, 1], [C, inner, 1, 1]
  nn::Linear proj_in_linear, proj_out_linear;  // [inner, C], [C, inner]
  std::vector<BasicTransformerBlock> transformer_blocks;
  void load(const WeightStore& w, const std::string& prefix, int64_t channels, int heads, int64_t dim_head,
            int num_layers, int64_t cross_dim, bool use_linear_projection, int groups);
  // x [B, C, H, W], context [B, S, cross] -> [B, C, H, W]
  Tensor operator()(const Tensor& x, const Tensor& context) const;
};

// The VAE's mid-block attention (diffusers Attention built from the old AttnBlock): one head over
// all channels; group_norm, then to_q/to_k/to_v/to_out.0 as Linear [C, C] with bias; + residual.
struct VAEAttention {
  nn::GroupNorm group_norm;
  nn::Linear to_q, to_k, to_v, to_out;  // [C, C]
  void load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups, float eps);
  Tensor operator()(const Tensor& x) const;  // [B, C, H, W] -> [B, C, H, W]
};

}  // namespace easel
