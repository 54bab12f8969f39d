// DDIM sampler, eta = 0 (Song et al. 2020, https://arxiv.org/abs/2010.02502), reproducing
// diffusers' DDIMScheduler:
// https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_ddim.py
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif
#include <algorithm>
#include <cmath>

#include "sampling/schedule_math.h"
#include "sampling/schedulers.h"

namespace easel::sched {
namespace {

class DDIMScheduler : public Scheduler {
 public:
  explicit DDIMScheduler(const SchedulerConfig& cfg) : Scheduler(cfg) {
    final_alpha_cumprod_ = cfg_.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  }

  void set_timesteps(int n) override {
    const int T = cfg_.num_train_timesteps;
    EASEL_CHECK(n >= 1 && n <= T, "scheduler", "num_inference_steps must be in [1, num_train_timesteps]");
    n_ = n;
    std::vector<int64_t> ts = integer_timesteps(cfg_, n);
    // "trailing" can end in -1 (numpy.arange yields an extra element for some step counts, e.g.
    // 61); diffusers then indexes alphas_cumprod[-1], i.e. the last entry. ac() does the same.
    for (int64_t t : ts)
      EASEL_CHECK(t >= -T && t < T, "scheduler", "ddim timestep " + std::to_string(t) + " out of range");
    int_timesteps_ = ts;
    timesteps_.assign(ts.begin(), ts.end());
    sigmas_.clear();
  }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const int64_t t = int_timesteps_[i];
    const int64_t prev_t = t - cfg_.num_train_timesteps / n_;  // diffusers uses T // N for every spacing
    const float a_t = ac(t);
    const float a_prev = prev_t >= 0 ? ac(prev_t) : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t;
    const float sqrt_a = std::sqrt(a_t), sqrt_b = std::sqrt(b_t);
    const int64_t n = x.numel();
    const float* s = x.f32();
    const float* m = model_output.f32();
    denoised_ = Tensor::empty(x.shape());
    float* pred = denoised_.f32();
    std::vector<float> eps(n);
    if (cfg_.prediction_type == "epsilon") {
      for (int64_t k = 0; k < n; k++) {
        pred[k] = (s[k] - sqrt_b * m[k]) / sqrt_a;
        eps[k] = m[k];
      }
    } else {  // v_prediction
      for (int64_t k = 0; k < n; k++) {
        pred[k] = sqrt_a * s[k] - sqrt_b * m[k];
        eps[k] = sqrt_a * m[k] + sqrt_b * s[k];
      }
    }
    if (cfg_.clip_sample)  // clip_sample_range = 1 (the diffusers default)
      for (int64_t k = 0; k < n; k++) pred[k] = std::clamp(pred[k], -1.0f, 1.0f);
    // eta = 0: std_dev_t = 0, so the direction coefficient is sqrt(1 - a_prev - 0).
    const float dir = std::sqrt((1.0f - a_prev) - 0.0f);
    const float sqrt_a_prev = std::sqrt(a_prev);
    Tensor out = Tensor::empty(x.shape());
    float* o = out.f32();
    for (int64_t k = 0; k < n; k++) o[k] = sqrt_a_prev * pred[k] + dir * eps[k];
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, size_t i) const override {
    EASEL_CHECK(i < int_timesteps_.size(), "scheduler", "add_noise: step index out of range (set_timesteps first?)");
    EASEL_CHECK(original.shape() == noise.shape(), "scheduler", "add_noise: shapes differ");
    const float a = ac(int_timesteps_[i]);
    const float sa = std::sqrt(a), sb = std::sqrt(1.0f - a);
    Tensor out = Tensor::empty(original.shape());
    const float *x = original.f32(), *z = noise.f32();
    float* o = out.f32();
    for (int64_t k = 0, n = original.numel(); k < n; k++) o[k] = sa * x[k] + sb * z[k];
    return out;
  }

 private:
  float ac(int64_t t) const { return alphas_cumprod_[t < 0 ? t + (int64_t)alphas_cumprod_.size() : t]; }
  float final_alpha_cumprod_;
  int n_ = 0;
  std::vector<int64_t> int_timesteps_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& cfg) { return std::make_unique<DDIMScheduler>(cfg); }

}  // namespace easel::sched
