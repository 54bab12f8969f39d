// Text-to-image and image-to-image for SD1.x/SD2.x, following diffusers'
// StableDiffusionPipeline / StableDiffusionImg2ImgPipeline step for step, so that the
// same seed with --rng torch-cpu gives diffusers' latents.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/stable_diffusion/
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "io/checkpoint.h"
#include "io/image.h"

namespace easel {

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.0f;
  uint64_t seed = 42;
  std::string sampler = "euler_a";    // see sampling/schedulers.h: euler, euler_a, ddim, dpmpp_2m, heun, lms, pndm, k_* ...
  std::string scheduler = "normal";   // normal | karras
  std::string rng = "torch-cpu";      // torch-cpu | philox
  int width = 512, height = 512;
  int clip_skip = 0;                  // 0 = model default; 1 = last layer; 2 = penultimate (A1111)
  std::optional<Image> init_image;    // img2img when set
  float strength = 0.75f;             // img2img denoising strength in (0, 1]
  // Low-memory mode: drop the weight files' resident pages between phases (text encoder ->
  // UNet -> VAE). Pair with ops::set_weight_cache_limit(0) for the lowest peak RSS.
  bool low_memory = false;
  // Called after each sampling step (step is 1-based). Return false to cancel.
  std::function<bool(int step, int total)> on_step;
  // Optional: receives the latents after each step (tests, previews). [1, 4, h, w]
  std::function<void(int step, const Tensor& latents)> on_latents;
};

struct GenerateResult {
  Image image;
  Tensor latents;  // final latents [1, 4, h, w] (before VAE scaling)
  Tensor decoded;  // VAE output mapped to [0, 1], [1, 3, H, W]
};

class Pipeline {
 public:
  // Loads every part of the checkpoint (file or diffusers folder) and checks all weights.
  static std::unique_ptr<Pipeline> load(const std::string& path, const CheckpointOverrides& ov = {});
  ~Pipeline();
  const ModelConfig& config() const;
  const std::string& path() const;
  // Validates options (size, steps, strength, init image) and generates one image.
  GenerateResult generate(const GenerateOptions& opt) const;
  // Checks options without running anything; throws easel::Error with a clear message.
  void validate(const GenerateOptions& opt) const;

 private:
  Pipeline();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace easel
