// AutoencoderKL (the SD VAE), diffusers naming.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/autoencoders/autoencoder_kl.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/autoencoders/vae.py
// Paper: Rombach et al., https://arxiv.org/abs/2112.10752 (Sec. 3.1, KL-regularised autoencoder)
// Every GroupNorm in the VAE uses eps 1e-6; resnets have no time embedding.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "models/blocks.h"
#include "models/config.h"

namespace easel {

// UNetMidBlock2D without time embedding: resnets[0], attentions[0], resnets[1].
struct VAEMidBlock {
  std::vector<ResnetBlock2D> resnets;     // 2 x [C -> C]
  std::vector<VAEAttention> attentions;  // 1
  void load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups);
  Tensor operator()(Tensor x) const;
};

struct VAEEncoder {
  struct DownBlock {  // DownEncoderBlock2D
    std::vector<ResnetBlock2D> resnets;
    std::optional<Downsample2D> downsampler;  // "downsamplers.0": pad (0,1,0,1), stride-2 conv
  };
  nn::Conv2d conv_in;  // [C0, in, 3, 3]
  std::vector<DownBlock> down_blocks;
  VAEMidBlock mid_block;
  nn::GroupNorm conv_norm_out;  // [C_last]
  nn::Conv2d conv_out;          // [2*latent, C_last, 3, 3]
  void load(const WeightStore& w, const std::string& prefix, const VAEConfig& cfg);
  Tensor operator()(const Tensor& x) const;  // [B, in, H, W] -> [B, 2*latent, H/f, W/f]
};

struct VAEDecoder {
  struct UpBlock {  // UpDecoderBlock2D
    std::vector<ResnetBlock2D> resnets;     // layers_per_block + 1
    std::optional<Upsample2D> upsampler;   // "upsamplers.0"
  };
  nn::Conv2d conv_in;  // [C_last, latent, 3, 3]
  VAEMidBlock mid_block;
  std::vector<UpBlock> up_blocks;
  nn::GroupNorm conv_norm_out;  // [C0]
  nn::Conv2d conv_out;          // [out, C0, 3, 3]
  void load(const WeightStore& w, const std::string& prefix, const VAEConfig& cfg);
  Tensor operator()(const Tensor& z) const;  // [B, latent, h, w] -> [B, out, h*f, w*f]
};

struct AutoencoderKL {
  VAEConfig config;
  VAEEncoder encoder;
  VAEDecoder decoder;
  nn::Conv2d quant_conv;       // [2*latent, 2*latent, 1, 1]
  nn::Conv2d post_quant_conv;  // [latent, latent, 1, 1]

  void load(const WeightStore& w, const VAEConfig& cfg);
  // image [B, 3, H, W] in [-1, 1] -> [B, 2*latent, H/f, W/f]: mean then logvar (quant_conv output,
  // before DiagonalGaussianDistribution's clamp of logvar to [-30, 20]).
  Tensor encode_moments(const Tensor& image) const;
  // z [B, latent, h, w], already divided by scaling_factor -> [B, 3, h*f, w*f] in about [-1, 1].
  Tensor decode(const Tensor& z) const;
};

}  // namespace easel
