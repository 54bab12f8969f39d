// Tiled VAE decode/encode (--vae-tiling): diffusers AutoencoderKL.enable_tiling(), step for step.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/autoencoders/autoencoder_kl.py
//   (tiled_decode, _tiled_encode, blend_v, blend_h)
// The input is cut into tiles of `tile` latents (decode) / `tile*f` pixels (encode) starting every
// int(tile*(1-overlap)) latents / int(tile*f*(1-overlap)) pixels; each tile goes through the whole
// AutoencoderKL::decode / encode_moments (so GroupNorm statistics are per tile, as in diffusers).
// Each output tile is linearly blended over E = int(tile_out*overlap) rows/columns with the
// (already blended) tile above and to its left, then cropped to its first tile_out - E rows/columns.
// Only the previous row's bottom E rows stay in memory besides one tile's activations and the result,
// so peak memory is that of one tile no matter the image size.
// Inputs no larger than one tile in both directions run untiled (bit-identical to decode/encode_moments).
#pragma once
#include "models/vae.h"

namespace easel {

struct VAETiling {
  // Tile size in pixels (diffusers tile_sample_min_size); 0 = config.sample_size (512 SD1/SD2,
  // 768 SD2-v, 1024 SDXL). A multiple of the VAE's downscale factor f, at least 4 latents.
  int tile_px = 0;
  // diffusers tile_overlap_factor, in [0, 0.5). A double, as Python computes int(size * factor).
  double overlap = 0.25;
};

// Throws an Error naming the bad option unless diffusers' tiling is well defined for this VAE:
// besides the ranges above, the tile stride must equal the cropped tile size (diffusers silently
// produces a wrongly sized image otherwise); for overlap 0.25 that means tile_px % (4*f) == 0.
void check_vae_tiling(const VAEConfig& cfg, const VAETiling& opt);

// z [B, latent, h, w], already divided by scaling_factor -> [B, 3, h*f, w*f] (as AutoencoderKL::decode).
Tensor vae_decode_tiled(const AutoencoderKL& vae, const Tensor& z, const VAETiling& opt = {});
// image [B, 3, H, W] -> moments [B, 2*latent, H/f, W/f] (as AutoencoderKL::encode_moments).
Tensor vae_encode_moments_tiled(const AutoencoderKL& vae, const Tensor& image, const VAETiling& opt = {});

}  // namespace easel
