// DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095), reproducing diffusers'
// DPMSolverMultistepScheduler with algorithm_type dpmsolver++ (or sde-dpmsolver++ for "2M SDE"),
// solver_order 2, solver_type midpoint:
// https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_dpmsolver_multistep.py
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

struct AlphaSigma {
  float alpha, sigma, lambda;
};

// _sigma_to_alpha_sigma_t and lambda = log(alpha) - log(sigma), in float32 as torch.
AlphaSigma alpha_sigma(float sigma) {
  const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
  const float s = sigma * alpha;
  return {alpha, s, std::log(alpha) - std::log(s)};
}

class DPMSolverPP2M : public Scheduler {
 public:
  DPMSolverPP2M(const SchedulerConfig& cfg, bool sde) : Scheduler(cfg), sde_(sde) {
    if (cfg_.final_sigmas_type != "zero" && cfg_.final_sigmas_type != "sigma_min")
      fail("scheduler", "final_sigmas_type '" + cfg_.final_sigmas_type + "' is not supported");
  }

  void set_timesteps(int n) override {
    EASEL_CHECK(n >= 1, "scheduler", "num_inference_steps must be >= 1");
    const int T = cfg_.num_train_timesteps;
    const int last_timestep = T;  // lambda_min_clipped = -inf clips nothing
    std::vector<int64_t> ts;
    if (cfg_.timestep_spacing == "linspace") {
      std::vector<double> v = np_linspace(0, last_timestep - 1, n + 1);
      for (int i = n; i >= 1; i--) ts.push_back((int64_t)np_round(v[i]));
    } else if (cfg_.timestep_spacing == "leading") {
      const int ratio = last_timestep / (n + 1);
      for (int i = n; i >= 1; i--) ts.push_back((int64_t)i * ratio + cfg_.steps_offset);
    } else {  // trailing
      for (double v : np_arange(last_timestep, 0, -(double)T / n)) ts.push_back((int64_t)np_round(v) - 1);
    }
    const std::vector<float> train = train_sigmas(alphas_cumprod_);
    std::vector<double> sig;
    if (cfg_.use_karras_sigmas) {
      const std::vector<float> logs = log_sigmas(train);
      sig = karras_sigmas(train.front(), train.back(), n);
      ts.clear();
      for (double s : sig) ts.push_back((int64_t)np_round(sigma_to_t(s, logs)));
    } else {
      sig = np_interp(std::vector<double>(ts.begin(), ts.end()), train);
    }
    const float last = cfg_.final_sigmas_type == "sigma_min"
                           ? std::sqrt((1.0f - alphas_cumprod_[0]) / alphas_cumprod_[0])
                           : 0.0f;
    sigmas_.assign(sig.begin(), sig.end());
    sigmas_.push_back(last);
    timesteps_.assign(ts.begin(), ts.end());
    lower_order_nums_ = 0;
    prev_x0_ = Tensor();
  }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const size_t len = timesteps_.size();
    const bool lower_order_final =
        i == len - 1 && (cfg_.euler_at_final || (cfg_.lower_order_final && len < 15) ||
                         cfg_.final_sigmas_type == "zero");
    const int64_t n = x.numel();
    const float* s = x.f32();
    const float* m = model_output.f32();
    // convert_model_output -> x0 prediction
    const AlphaSigma cur = alpha_sigma(sigmas_[i]);
    Tensor x0 = Tensor::empty(x.shape());
    float* d0 = x0.f32();
    if (cfg_.prediction_type == "epsilon") {
      for (int64_t k = 0; k < n; k++) d0[k] = (s[k] - cur.sigma * m[k]) / cur.alpha;
    } else {  // v_prediction
      for (int64_t k = 0; k < n; k++) d0[k] = cur.alpha * s[k] - cur.sigma * m[k];
    }
    const AlphaSigma t = alpha_sigma(sigmas_[i + 1]);
    const float h = t.lambda - cur.lambda;
    Tensor out = Tensor::empty(x.shape());
    float* o = out.f32();
    const bool first = lower_order_nums_ < 1 || lower_order_final || !prev_x0_.defined() || i == 0;
    // D1 = (1 / r0) * (m0 - m1) with r0 = h_0 / h (second order only)
    float inv_r0 = 0.0f;
    if (!first) {
      const AlphaSigma s1 = alpha_sigma(sigmas_[i - 1]);
      const float r0 = (cur.lambda - s1.lambda) / h;
      inv_r0 = 1.0f / r0;
    }
    const float* d1 = first ? nullptr : prev_x0_.f32();
    if (!sde_) {
      const float ratio = t.sigma / cur.sigma;
      const float coef = t.alpha * (std::exp(-h) - 1.0f);
      if (first) {
        for (int64_t k = 0; k < n; k++) o[k] = ratio * s[k] - coef * d0[k];
      } else {
        const float half_coef = 0.5f * coef;
        for (int64_t k = 0; k < n; k++) {
          const float D1 = inv_r0 * (d0[k] - d1[k]);
          o[k] = (ratio * s[k] - coef * d0[k]) - half_coef * D1;
        }
      }
    } else {  // sde-dpmsolver++: one randn per step, drawn before the update as diffusers does
      Tensor noise = rng.randn(x.shape());
      const float* z = noise.f32();
      const float ratio = t.sigma / cur.sigma * std::exp(-h);
      const float coef = t.alpha * (1.0f - std::exp(-2.0f * h));
      const float noise_coef = t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h));
      if (first) {
        for (int64_t k = 0; k < n; k++) o[k] = (ratio * s[k] + coef * d0[k]) + noise_coef * z[k];
      } else {
        const float half_coef = 0.5f * coef;
        for (int64_t k = 0; k < n; k++) {
          const float D1 = inv_r0 * (d0[k] - d1[k]);
          o[k] = ((ratio * s[k] + coef * d0[k]) + half_coef * D1) + noise_coef * z[k];
        }
      }
    }
    if (lower_order_nums_ < 2) lower_order_nums_++;
    prev_x0_ = x0;
    denoised_ = x0;
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, size_t i) const override {
    EASEL_CHECK(i < sigmas_.size(), "scheduler", "add_noise: step index out of range (set_timesteps first?)");
    EASEL_CHECK(original.shape() == noise.shape(), "scheduler", "add_noise: shapes differ");
    const AlphaSigma a = alpha_sigma(sigmas_[i]);
    Tensor out = Tensor::empty(original.shape());
    const float *x = original.f32(), *z = noise.f32();
    float* o = out.f32();
    for (int64_t k = 0, n = original.numel(); k < n; k++) o[k] = a.alpha * x[k] + a.sigma * z[k];
    return out;
  }

 private:
  bool sde_;
  int lower_order_nums_ = 0;
  Tensor prev_x0_;  // model_outputs[-2] after the shift
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2m(const SchedulerConfig& cfg, bool sde) {
  return std::make_unique<DPMSolverPP2M>(cfg, sde);
}

}  // namespace easel::sched
