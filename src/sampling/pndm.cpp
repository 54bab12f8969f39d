// PNDM / PLMS sampler (Liu et al. 2022, https://arxiv.org/abs/2202.09778) with skip_prk_steps, as
// diffusers' PNDMScheduler -- the scheduler SD1.x checkpoints ship with:
// https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_pndm.py
// N inference steps run N + 1 model evaluations (the second timestep repeats: a Heun-like warm-up).
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

class PNDMScheduler : public Scheduler {
 public:
  explicit PNDMScheduler(const SchedulerConfig& cfg) : Scheduler(cfg) {
    final_alpha_cumprod_ = cfg_.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  }

  void set_timesteps(int n) override {
    const int T = cfg_.num_train_timesteps;
    EASEL_CHECK(n >= 1 && n <= T, "scheduler", "num_inference_steps must be in [1, num_train_timesteps]");
    n_ = n;
    std::vector<int64_t> ts = integer_timesteps(cfg_, n);  // ascending, as diffusers' _timesteps
    std::reverse(ts.begin(), ts.end());
    // plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1]
    std::vector<int64_t> plms(ts.begin(), ts.end() - 1);
    if (ts.size() >= 2) plms.push_back(ts[ts.size() - 2]);
    plms.push_back(ts.back());
    std::reverse(plms.begin(), plms.end());
    int_timesteps_ = plms;
    timesteps_.assign(plms.begin(), plms.end());
    sigmas_.clear();
    ets_.clear();
    counter_ = 0;
    cur_sample_ = Tensor();
  }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const int64_t n = x.numel();
    int64_t t = int_timesteps_[i];
    int64_t prev_t = t - cfg_.num_train_timesteps / n_;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(model_output);
    } else {
      prev_t = t;
      t = t + cfg_.num_train_timesteps / n_;
    }
    Tensor mo = Tensor::empty(x.shape());
    float* e = mo.f32();
    const Tensor* sample = &x;
    const size_t k = ets_.size();
    auto E = [&](size_t back) { return ets_[k - back].f32(); };  // ets[-back]
    if (k == 1 && counter_ == 0) {
      std::copy(model_output.f32(), model_output.f32() + n, e);
      cur_sample_ = x;
    } else if (k == 1 && counter_ == 1) {
      const float* m = model_output.f32();
      for (int64_t j = 0; j < n; j++) e[j] = (m[j] + E(1)[j]) / 2.0f;
      sample = &cur_sample_;
    } else if (k == 2) {
      for (int64_t j = 0; j < n; j++) e[j] = (3.0f * E(1)[j] - E(2)[j]) / 2.0f;
    } else if (k == 3) {
      for (int64_t j = 0; j < n; j++) e[j] = (23.0f * E(1)[j] - 16.0f * E(2)[j] + 5.0f * E(3)[j]) / 12.0f;
    } else {
      const float c = (float)(1.0 / 24.0);
      for (int64_t j = 0; j < n; j++)
        e[j] = c * (55.0f * E(1)[j] - 59.0f * E(2)[j] + 37.0f * E(3)[j] - 9.0f * E(4)[j]);
    }
    Tensor out = prev_sample(*sample, t, prev_t, mo);
    if (counter_ == 1) cur_sample_ = Tensor();
    counter_++;
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
  // _get_prev_sample (PNDM eq. 9), float32 as torch.
  Tensor prev_sample(const Tensor& x, int64_t t, int64_t prev_t, Tensor& mo) const {
    const float a_t = ac(t);
    const float a_prev = prev_t >= 0 ? ac(prev_t) : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    const int64_t n = x.numel();
    const float* s = x.f32();
    float* e = mo.f32();
    if (cfg_.prediction_type == "v_prediction") {
      const float sa = std::sqrt(a_t), sb = std::sqrt(b_t);
      for (int64_t j = 0; j < n; j++) e[j] = sa * e[j] + sb * s[j];
    }
    const float sample_coeff = std::sqrt(a_prev / a_t);
    const float denom = a_t * std::sqrt(b_prev) + std::sqrt(a_t * b_t * a_prev);
    const float diff = a_prev - a_t;
    Tensor out = Tensor::empty(x.shape());
    float* o = out.f32();
    for (int64_t j = 0; j < n; j++) o[j] = sample_coeff * s[j] - (diff * e[j]) / denom;
    return out;
  }
  float ac(int64_t t) const { return alphas_cumprod_[t < 0 ? t + (int64_t)alphas_cumprod_.size() : t]; }

  float final_alpha_cumprod_;
  int n_ = 0;
  std::vector<int64_t> int_timesteps_;
  std::vector<Tensor> ets_;  // past model outputs (at most 4)
  int counter_ = 0;
  Tensor cur_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& cfg) { return std::make_unique<PNDMScheduler>(cfg); }

}  // namespace easel::sched
