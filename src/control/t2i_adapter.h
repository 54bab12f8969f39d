// T2I-Adapter (Mou et al., https://arxiv.org/abs/2302.08453): a small conv network that turns a guide
// image into one feature map per UNet down block, added inside the down blocks
// (UNetExtras::down_intrablock). Runs once per image.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/models/adapter.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/t2i_adapter/
//   https://github.com/TencentARC/T2I-Adapter/blob/main/ldm/modules/encoders/adapter.py  (original keys)
//
// Types (diffusers adapter_type), with their feature maps for a guide of H x W pixels:
//   full_adapter     pixel_unshuffle(df=8) -> conv_in 3x3 -> body[i]: (avg-pool 2x2 if i > 0) -> 1x1 in_conv
//                    when channels change -> num_res_blocks x (3x3 conv, ReLU, 1x1 conv, + x)
//                    -> channels[i] at H/8/2^i  (SD1/SD2: 320@/8, 640@/16, 1280@/32, 1280@/64)
//   full_adapter_xl  df=16; body[1] changes channels without pooling, only body[2] pools:
//                    320@/16, 640@/16, 1280@/32, 1280@/32 (SDXL; the 4th goes to the mid block)
//   light_adapter    pixel_unshuffle(8) -> body[i]: (avg-pool if i > 0) -> 1x1 in_conv to channels/4 ->
//                    num_res_blocks x (3x3, ReLU, 3x3, + x) -> 1x1 out_conv; len(channels)+1 blocks
// Files:
//   diffusers   folder with config.json + diffusion_pytorch_model(.fp16).safetensors/.bin, or such a
//               weights file alone: "adapter.conv_in.weight", "adapter.body.I.in_conv.weight",
//               "adapter.body.I.resnets.J.block1.weight", (light) "adapter.body.I.out_conv.weight"
//   TencentARC  .pth/.safetensors: "conv_in.weight", "body.(I*num_res_blocks+J).{in_conv,block1,block2}"
//               (full), "body.I.in_conv", "body.I.body.J.block1", "body.I.out_conv" (light).
// Without a config.json, sizes come from the shapes; the downscale factor from conv_in's input
// channels (in_channels * df^2: 64 or 192 -> 8, SD1/SD2; 256 or 768 -> 16, full_adapter_xl, as ComfyUI).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/image.h"
#include "models/config.h"
#include "models/nn.h"

namespace easel {

struct T2IAdapterConfig {  // diffusers T2IAdapter config.json
  std::string adapter_type = "full_adapter";  // "full_adapter" | "full_adapter_xl" | "light_adapter"
  int in_channels = 3;                        // guide channels (1: gray sketch/canny/depth adapters)
  std::vector<int> channels = {320, 640, 1280, 1280};
  int num_res_blocks = 2;
  int downscale_factor = 8;  // pixel-unshuffle factor (16 for full_adapter_xl)
};

struct T2IAdapter {
  struct ResBlock {     // AdapterResnetBlock / LightAdapterResnetBlock: x + block2(relu(block1(x)))
    nn::Conv2d block1;  // [C, C, 3, 3]
    nn::Conv2d block2;  // [C, C, 1, 1] (full) or [C, C, 3, 3] (light)
  };
  struct Block {        // AdapterBlock / LightAdapterBlock
    bool down = false;  // AvgPool2d(2, 2, ceil_mode=True) first
    std::optional<nn::Conv2d> in_conv;   // [out (light: out/4), in, 1, 1]
    std::vector<ResBlock> resnets;
    std::optional<nn::Conv2d> out_conv;  // light only: [out, out/4, 1, 1]
  };

  T2IAdapterConfig config;
  std::string path;    // file or folder, for messages
  std::string format;  // "diffusers" | "tencentarc"
  std::optional<nn::Conv2d> conv_in;  // full / full_xl: [channels[0], in_channels*df^2, 3, 3]
  std::vector<Block> body;

  // A diffusers folder (config.json + weights) or a single weights file in either key layout.
  // Throws easel::Error naming the file for unreadable/truncated files, files that are not a
  // T2I-Adapter (a UNet, a ControlNet, a LoRA...), unsupported kinds (style adapter, CoAdapter
  // fuser), missing keys and shape mismatches.
  static T2IAdapter load(const std::string& path);
  // Builds from diffusers-named weights without the "adapter." prefix ("conv_in.weight", ...).
  static T2IAdapter from_weights(const WeightStore& w, const T2IAdapterConfig& cfg, const std::string& path);

  bool is_sdxl() const { return config.adapter_type == "full_adapter_xl"; }
  // The pixel-unshuffle factor: the guide's height and width must be multiples of it
  // (diffusers rounds the default size down to it).
  int64_t downscale_factor() const { return config.downscale_factor; }
  // downscale_factor * 2^(number of pooling blocks): the coarsest feature's stride in pixels.
  int64_t total_downscale_factor() const;
  // guide [1, in_channels, H, W] in 0..1 -> one feature map per body block (shapes in the header).
  std::vector<Tensor> forward(const Tensor& guide) const;
  // For control_unit.h's AdapterFn: an RGB guide [1, 3, H, W] in 0..1 (already W x H) -> features.
  // A 1-channel adapter takes its gray version: PIL's "L" of the 8-bit values
  // ((19595 R + 38470 G + 7471 B + 0x8000) >> 16) / 255, what convert("L") gives diffusers.
  std::vector<Tensor> forward_rgb01(const Tensor& rgb01) const;
};

// ---- pipeline behaviour (diffusers StableDiffusionAdapterPipeline / StableDiffusionXLAdapterPipeline) ----

// Guide image -> adapter input [1, in_channels, height, width] in 0..1: PIL Lanczos resize to
// (width, height) when the size differs, then x / 255 (diffusers _preprocess_adapter_image).
// A 1-channel adapter takes the gray image (PIL "L"); a 3-channel one RGB (as PIL's convert).
Tensor t2i_adapter_input(const Image& guide, int width, int height, int in_channels);

// Throws a clear easel::Error when the adapter's features do not fit `unet` for an image of
// width x height pixels (latent = pixels / vae_scale): e.g. an SD1/SD2 adapter on SDXL or the
// reverse (channel counts and strides differ), or a size that is not a multiple of the adapter's
// downscale factor. Expected, per down block i: block_out_channels[i] channels at latent/2^i (a
// DownBlock2D with a downsampler: after it, latent/2^(i+1)); one more feature may match the mid block.
void check_t2i_adapter(const T2IAdapter& adapter, const UNetConfig& unet, int height, int width, int vae_scale = 8);

// diffusers' adapter_state: one adapter: features * scale; several (MultiAdapter):
// sum_i scale_i * features_i, accumulated in order; then each repeated `copies` times along the
// batch (num_images_per_prompt, then x2 for classifier-free guidance: torch.cat([v] * 2)).
// All adapters must give the same shapes (same downscale behaviour), else easel::Error.
std::vector<Tensor> t2i_adapter_state(const std::vector<std::vector<Tensor>>& features,
                                      const std::vector<float>& scales, int64_t copies);

// Whether the adapter state is passed at step `step` (0-based) of `num_steps`:
// StableDiffusionXLAdapterPipeline's `i < int(num_inference_steps * adapter_conditioning_factor)`
// (StableDiffusionAdapterPipeline has no factor: always, i.e. factor 1).
inline bool t2i_adapter_active(int step, int num_steps, double conditioning_factor) {
  return step < (int)((double)num_steps * conditioning_factor);
}

}  // namespace easel
