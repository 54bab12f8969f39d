// Text-to-image and image-to-image for SD1.x/SD2.x and SDXL (base, refiner, base -> refiner
// hand-off), following diffusers' StableDiffusion(XL)Pipeline / Img2ImgPipeline step for step, so
// that the same seed with --rng torch-cpu gives diffusers' latents.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/stable_diffusion/
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/stable_diffusion_xl/
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/control_unit.h"
#include "io/checkpoint.h"
#include "io/image.h"

namespace easel {

class Pipeline;
namespace lora {
struct LoraSpec;
}

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.0f;
  uint64_t seed = 42;
  std::string sampler = "euler_a";    // see sampling/schedulers.h: euler, euler_a, ddim, dpmpp_2m, heun, lms, pndm, k_* ...
  std::string scheduler = "normal";   // normal | karras
  std::string rng = "torch-cpu";      // torch-cpu | philox
  int width = 0, height = 0;          // 0 = the model's native size (512 SD1, 768 SD2-v, 1024 SDXL)
  int clip_skip = 0;                  // 0 = model default; 1 = last layer; 2 = penultimate (A1111)
  std::optional<Image> init_image;    // img2img when set
  float strength = 0.75f;             // img2img denoising strength in (0, 1]
  // SDXL micro-conditioning (diffusers' defaults): original/target size 0 = the image size.
  int original_width = 0, original_height = 0, crop_left = 0, crop_top = 0, target_width = 0, target_height = 0;
  float aesthetic_score = 6.0f, negative_aesthetic_score = 2.5f;  // refiner (requires_aesthetics_score)
  // SDXL base -> refiner: the base runs the timesteps >= the cutoff of refiner_start (diffusers'
  // denoising_end), the refiner the rest from the base's latents (denoising_start), no new noise.
  const Pipeline* refiner = nullptr;
  float refiner_start = 0.8f;
  // ControlNet / Control-LoRA / T2I-Adapter units (control/control_unit.h), summed in order.
  std::vector<ControlUnit> control;
  bool control_guess_mode = false;  // diffusers' guess mode for every ControlNet unit
  // Receives the guides as used (resized to the image size), in unit order.
  std::function<void(const std::vector<Image>& guides)> on_guides;
  // Tiled VAE decode/encode (diffusers enable_tiling): bounded memory for large images.
  bool vae_tiling = false;
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
  Tensor base_latents;  // with a refiner: the base's latents handed over [1, 4, h, w]
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
  // The size generate() uses for opt (width/height 0 = native).
  int width_for(const GenerateOptions& opt) const;
  int height_for(const GenerateOptions& opt) const;
  // Applies LoRAs to the UNet / text encoders, replacing any set before; an empty list restores the
  // original weights bit for bit. Merge: into f32 copies of the weights (lora/lora_apply.h; no per-step
  // cost). Bypass: beside the layers at run time (lora/lora_bypass.h; weights untouched, instant).
  // Auto: merge while the touched weights' f32 copies take at most kLoraMergeAutoBytes, else bypass.
  // A failing LoRA (any Error) leaves the model as it was.
  enum class LoraApply { Auto, Merge, Bypass };
  static constexpr size_t kLoraMergeAutoBytes = size_t(2) << 30;
  void set_loras(const std::vector<lora::LoraSpec>& loras, LoraApply mode = LoraApply::Auto);
  // What set_loras chose (Merge or Bypass; Auto when no LoRA is set).
  LoraApply lora_mode() const;
  // The loaded checkpoint (its stores hold the merged weights while LoRAs are set).
  const Checkpoint& checkpoint() const;

 private:
  Pipeline();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace easel
