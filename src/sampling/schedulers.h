// Noise schedulers reproducing the diffusers classes (0.42) configured from SchedulerConfig:
//   "euler"    EulerDiscreteScheduler
//   "euler_a"  EulerAncestralDiscreteScheduler
//   "heun"     HeunDiscreteScheduler (order 2: N steps = 2N-1 evaluations)
//   "lms"      LMSDiscreteScheduler (order-4 linear multistep)
//   "ddim"     DDIMScheduler (eta 0)
//   "dpmpp_2m" DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint)
//   "dpmpp_2m_sde" the same with algorithm_type sde-dpmsolver++ (one randn per step from rng)
//   "pndm"     PNDMScheduler with skip_prk_steps (PLMS; SD1's default; N steps = N+1 evaluations)
//   "k_euler", "k_euler_a", "k_dpmpp_2m", "k_heun" (2N-1 evaluations), "k_lms": k-diffusion's
//              samplers as A1111 runs them (LDM schedule, log-sigma "normal" spacing, fractional
//              UNet timesteps, x0 = x * sigmas[0])
// schedule "normal" or "karras" (use_karras_sigmas; not for ddim/pndm).
// https://github.com/huggingface/diffusers/tree/main/src/diffusers/schedulers
// Parity is tested on model-free loops against diffusers / k-diffusion (tests/test_samplers.cpp).
//
// The pipeline loop is the diffusers loop, with step indices instead of timestep look-ups:
//   s->set_timesteps(steps);
//   x = noise * s->init_noise_sigma();                 // txt2img
//   for (size_t i = begin; i < s->timesteps().size(); i++) {
//     Tensor in = s->scale_model_input(x, i);
//     Tensor eps = unet(in, s->timesteps()[i], ...);   // + guidance
//     x = s->step(eps, i, x, rng);
//   }
// img2img: begin = img2img_start_index(*s, steps, strength); x = s->add_noise(init, noise, begin)
// (diffusers' get_timesteps + set_begin_index). Step indices are absolute (begin, begin+1, ...).
//
// Precision follows diffusers: float64 where it uses numpy float64 (interpolated/karras sigmas,
// timestep conversion), float32 where it uses torch float32 (betas, alphas_cumprod, per-step math).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/config.h"
#include "sampling/rng.h"

namespace easel {

class Scheduler {
 public:
  virtual ~Scheduler();
  // Builds the timestep/sigma tables and resets the multistep state.
  virtual void set_timesteps(int num_inference_steps) = 0;
  // Timesteps fed to the UNet, one per model evaluation (integers stored as float for
  // ddim/dpm++/pndm; fractional for euler/heun/lms/k_*).
  const std::vector<float>& timesteps() const { return timesteps_; }
  // sigmas[i] for each step plus the final one (empty for ddim/pndm).
  const std::vector<float>& sigmas() const { return sigmas_; }
  // Scale of the initial noise (txt2img latents = noise * init_noise_sigma()).
  virtual float init_noise_sigma() const { return 1.0f; }
  // Model input at step i (x / sqrt(sigma^2 + 1) for sigma-based samplers; identity for
  // ddim/dpm++/pndm).
  virtual Tensor scale_model_input(const Tensor& x, size_t step_index) const;
  // One sampler step from model_output at step i; returns the previous (less noisy) sample.
  // Ancestral samplers draw their noise from rng (one randn of x's shape per step).
  virtual Tensor step(const Tensor& model_output, size_t step_index, const Tensor& x, Rng& rng) = 0;
  // Forward-noises `original` to the noise level of step i (img2img start).
  virtual Tensor add_noise(const Tensor& original, const Tensor& noise, size_t step_index) const = 0;
  // Scheduler order (diffusers' `order`: 2 for heun/k_heun, else 1).
  virtual int order() const { return 1; }
  // img2img first step index (see img2img_start_index): diffusers' get_timesteps; the k-diffusion
  // samplers use A1111's steps - int(min(strength, 0.999) * steps) - 1.
  virtual size_t img2img_start(int num_inference_steps, double strength) const;
  // The x0 prediction of the last step() (pred_original_sample / DPM's x0_pred), for previews.
  const Tensor& last_denoised() const { return denoised_; }
  // alphas_cumprod [num_train_timesteps] (float32 as torch computes it).
  const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }

 protected:
  explicit Scheduler(const SchedulerConfig& cfg);
  SchedulerConfig cfg_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> timesteps_, sigmas_;
  Tensor denoised_;
  void check_step(const Tensor& model_output, size_t step_index, const Tensor& x) const;
};

// sampler: "euler" | "euler_a" | "heun" | "lms" | "ddim" | "dpmpp_2m" | "dpmpp_2m_sde" | "pndm" |
// "k_euler" | "k_euler_a" | "k_dpmpp_2m" | "k_heun" | "k_lms"; schedule: "normal" | "karras" (sets
// use_karras_sigmas, or keeps cfg's value when schedule is empty). Throws easel::Error.
std::unique_ptr<Scheduler> make_scheduler(const std::string& sampler, const std::string& schedule,
                                          const SchedulerConfig& cfg);

// A1111 sampler names <-> (sampler, schedule): "Euler a" -> (k_euler_a, normal), "DPM++ 2M Karras" ->
// (k_dpmpp_2m, karras), "Euler", "Heun", "LMS" -> k_* (A1111 runs these through k-diffusion);
// "DPM++ 2M SDE", "DDIM", "PLMS" -> the diffusers ports. Our own names are accepted too.
// schedule_type is A1111's separate "Schedule type": "Karras"; "Automatic" = the sampler's A1111
// default (Karras for DPM++ 2M); "" = pre-1.9 meaning, the name alone decides ("DPM++ 2M" = normal).
// Case-insensitive; throws for samplers not provided.
void parse_a1111_sampler(const std::string& name, const std::string& schedule_type, std::string* sampler,
                         std::string* schedule);
// "Euler a", "DPM++ 2M Karras", ... (the infotext "Sampler:" value; karras folded into the name).
std::string a1111_sampler_name(const std::string& sampler, const std::string& schedule);

// First step index for img2img, as StableDiffusionImg2ImgPipeline.get_timesteps:
// t_start = max(steps - min(int(steps * strength), steps), 0) * order (A1111's rule for k_*).
// Call after set_timesteps.
// A strength that is exactly a float (0.7f) is read as its shortest decimal (0.7), as Python sees it.
size_t img2img_start_index(const Scheduler& s, int num_inference_steps, double strength);

}  // namespace easel
