// AutoencoderKL; see vae.h for the references.
#include "models/vae.h"

namespace easel {

using nn::join;

static constexpr float kVAEEps = 1e-6f;  // diffusers Encoder/Decoder: resnet_eps=1e-6 everywhere

void VAEMidBlock::load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups) {
  resnets.assign(2, {});
  for (int i = 0; i < 2; i++)
    resnets[i].load(w, join(prefix, "resnets." + std::to_string(i)), channels, channels, 0, groups, kVAEEps);
  attentions.assign(1, {});
  attentions[0].load(w, join(prefix, "attentions.0"), channels, groups, kVAEEps);
}

Tensor VAEMidBlock::operator()(Tensor x) const {
  x = resnets[0](x, Tensor());
  x = attentions[0](x);
  return resnets[1](x, Tensor());
}

// ---- encoder --------------------------------------------------------------------------------
void VAEEncoder::load(const WeightStore& w, const std::string& prefix, const VAEConfig& cfg) {
  const auto& ch = cfg.block_out_channels;
  int groups = cfg.norm_num_groups;
  conv_in.load(w, join(prefix, "conv_in"), cfg.in_channels, ch[0], 3);
  down_blocks.assign(ch.size(), {});
  int64_t out = ch[0];
  for (size_t i = 0; i < ch.size(); i++) {
    int64_t in = out;
    out = ch[i];
    std::string p = join(prefix, "down_blocks." + std::to_string(i));
    auto& blk = down_blocks[i];
    blk.resnets.assign(cfg.layers_per_block, {});
    for (int j = 0; j < cfg.layers_per_block; j++)
      blk.resnets[j].load(w, join(p, "resnets." + std::to_string(j)), j == 0 ? in : out, out, 0, groups, kVAEEps);
    if (i + 1 < ch.size()) {
      blk.downsampler.emplace();
      blk.downsampler->load(w, join(p, "downsamplers.0"), out, /*vae_padding=*/true);
    }
  }
  mid_block.load(w, join(prefix, "mid_block"), ch.back(), groups);
  conv_norm_out.load(w, join(prefix, "conv_norm_out"), ch.back(), groups, kVAEEps);
  conv_out.load(w, join(prefix, "conv_out"), ch.back(), 2 * cfg.latent_channels, 3);  // double_z
}

Tensor VAEEncoder::operator()(const Tensor& x) const {
  Tensor h = conv_in(x);  // [B, C0, H, W]
  for (const auto& blk : down_blocks) {
    for (const auto& r : blk.resnets) h = r(h, Tensor());
    if (blk.downsampler) h = (*blk.downsampler)(h);
  }
  h = mid_block(std::move(h));                      // [B, C_last, H/f, W/f]
  return conv_out(conv_norm_out(h, /*silu=*/true));  // [B, 2*latent, H/f, W/f]
}

// ---- decoder --------------------------------------------------------------------------------
void VAEDecoder::load(const WeightStore& w, const std::string& prefix, const VAEConfig& cfg) {
  const auto& ch = cfg.block_out_channels;
  int groups = cfg.norm_num_groups;
  size_t levels = ch.size();
  conv_in.load(w, join(prefix, "conv_in"), cfg.latent_channels, ch.back(), 3);
  mid_block.load(w, join(prefix, "mid_block"), ch.back(), groups);
  up_blocks.assign(levels, {});
  int64_t out = ch.back();
  for (size_t i = 0; i < levels; i++) {
    int64_t prev = out;
    out = ch[levels - 1 - i];
    std::string p = join(prefix, "up_blocks." + std::to_string(i));
    auto& blk = up_blocks[i];
    blk.resnets.assign(cfg.layers_per_block + 1, {});
    for (int j = 0; j <= cfg.layers_per_block; j++)
      blk.resnets[j].load(w, join(p, "resnets." + std::to_string(j)), j == 0 ? prev : out, out, 0, groups, kVAEEps);
    if (i + 1 < levels) {
      blk.upsampler.emplace();
      blk.upsampler->load(w, join(p, "upsamplers.0"), out);
    }
  }
  conv_norm_out.load(w, join(prefix, "conv_norm_out"), ch[0], groups, kVAEEps);
  conv_out.load(w, join(prefix, "conv_out"), ch[0], cfg.out_channels, 3);
}

Tensor VAEDecoder::operator()(const Tensor& z) const {
  Tensor h = conv_in(z);  // [B, C_last, h, w]
  h = mid_block(std::move(h));
  for (const auto& blk : up_blocks) {
    for (const auto& r : blk.resnets) h = r(h, Tensor());
    if (blk.upsampler) h = (*blk.upsampler)(h);
  }
  return conv_out(conv_norm_out(h, /*silu=*/true));  // [B, out, H, W]
}

// ---- AutoencoderKL --------------------------------------------------------------------------
void AutoencoderKL::load(const WeightStore& w, const VAEConfig& cfg) {
  if (cfg.block_out_channels.empty()) fail("vae", w.source + ": empty block_out_channels");
  config = cfg;
  encoder.load(w, "encoder", cfg);
  decoder.load(w, "decoder", cfg);
  int64_t L = cfg.latent_channels;
  quant_conv.load(w, "quant_conv", 2 * L, 2 * L, 1);
  post_quant_conv.load(w, "post_quant_conv", L, L, 1);
}

Tensor AutoencoderKL::encode_moments(const Tensor& image) const {
  if (image.dim() != 4 || image.size(1) != config.in_channels)
    fail("vae", "image " + image.str() + " is not [B, " + std::to_string(config.in_channels) + ", H, W]");
  int64_t f = config.downscale();
  if (image.size(2) % f || image.size(3) % f)
    fail("vae", "image size " + std::to_string(image.size(3)) + "x" + std::to_string(image.size(2)) +
                    " is not a multiple of " + std::to_string(f));
  return quant_conv(encoder(image));  // [B, 2*latent, H/f, W/f]
}

Tensor AutoencoderKL::decode(const Tensor& z) const {
  if (z.dim() != 4 || z.size(1) != config.latent_channels)
    fail("vae", "latent " + z.str() + " is not [B, " + std::to_string(config.latent_channels) + ", h, w]");
  return decoder(post_quant_conv(z));  // [B, out, h*f, w*f]
}

}  // namespace easel
