// Euler, Euler-ancestral, Heun and LMS samplers (Karras et al. 2022, https://arxiv.org/abs/2206.00364),
// reproducing diffusers' EulerDiscreteScheduler / EulerAncestralDiscreteScheduler /
// HeunDiscreteScheduler / LMSDiscreteScheduler (they share the sigma table):
// https://github.com/huggingface/diffusers/blob/main/src/diffusers/schedulers/scheduling_euler_discrete.py
// Euler-ancestral with karras sigmas (not offered by diffusers) uses EulerDiscrete's karras table.
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

class EulerScheduler : public Scheduler {
 public:
  EulerScheduler(const SchedulerConfig& cfg, bool ancestral) : Scheduler(cfg), ancestral_(ancestral) {
    if (cfg_.interpolation_type != "linear")
      fail("scheduler", "interpolation_type '" + cfg_.interpolation_type + "' is not supported (linear)");
    if (cfg_.final_sigmas_type != "zero" && cfg_.final_sigmas_type != "sigma_min")
      fail("scheduler", "final_sigmas_type '" + cfg_.final_sigmas_type + "' is not supported");
  }

  void set_timesteps(int n) override {
    EASEL_CHECK(n >= 1, "scheduler", "num_inference_steps must be >= 1");
    const int T = cfg_.num_train_timesteps;
    // Spacing, as float32 timesteps.
    std::vector<float> ts;
    if (cfg_.timestep_spacing == "linspace") {
      for (double v : np_linspace(0, T - 1, n)) ts.push_back((float)v);
      std::reverse(ts.begin(), ts.end());
    } else if (cfg_.timestep_spacing == "leading") {
      const int ratio = T / n;
      for (int i = n - 1; i >= 0; i--) ts.push_back((float)(i * ratio) + (float)cfg_.steps_offset);
    } else {  // trailing
      for (double v : np_arange(T, 0, -(double)T / n)) ts.push_back((float)np_round(v) - 1.0f);
    }
    const std::vector<float> train = train_sigmas(alphas_cumprod_);
    const std::vector<float> logs = log_sigmas(train);
    std::vector<double> tsd(ts.begin(), ts.end());
    std::vector<double> sig = np_interp(tsd, train);
    if (cfg_.use_karras_sigmas) {
      sig = karras_sigmas(sig.back(), sig.front(), n);
      tsd.clear();
      for (double s : sig) tsd.push_back(sigma_to_t(s, logs));
    }
    float last = 0.0f;
    if (!ancestral_ && cfg_.final_sigmas_type == "sigma_min")
      last = std::sqrt((1.0f - alphas_cumprod_[0]) / alphas_cumprod_[0]);
    sigmas_.assign(sig.begin(), sig.end());  // float64 -> float32
    sigmas_.push_back(last);
    timesteps_.assign(tsd.begin(), tsd.end());
  }

  float init_noise_sigma() const override {
    EASEL_CHECK(!sigmas_.empty(), "scheduler", "init_noise_sigma() before set_timesteps()");
    const float m = *std::max_element(sigmas_.begin(), sigmas_.end());
    if (cfg_.timestep_spacing == "linspace" || cfg_.timestep_spacing == "trailing") return m;
    return std::sqrt(m * m + 1.0f);
  }

  Tensor scale_model_input(const Tensor& x, size_t i) const override {
    EASEL_CHECK(i < timesteps_.size(), "scheduler", "scale_model_input: step index out of range");
    const float sigma = sigmas_[i];
    const float d = std::sqrt(sigma * sigma + 1.0f);
    Tensor out = Tensor::empty(x.shape());
    const float* px = x.f32();
    float* po = out.f32();
    for (int64_t k = 0, n = x.numel(); k < n; k++) po[k] = px[k] / d;
    return out;
  }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const float sigma = sigmas_[i];
    const int64_t n = x.numel();
    const float* s = x.f32();
    const float* pred = predict_original(model_output, x, sigma);
    Tensor out = Tensor::empty(x.shape());
    float* o = out.f32();
    if (!ancestral_) {
      // s_churn = 0: sigma_hat = sigma
      const float dt = sigmas_[i + 1] - sigma;
      for (int64_t k = 0; k < n; k++) o[k] = s[k] + ((s[k] - pred[k]) / sigma) * dt;
    } else {
      const float from = sigma, to = sigmas_[i + 1];
      const float up = std::sqrt(to * to * (from * from - to * to) / (from * from));
      const float down = std::sqrt(to * to - up * up);
      const float dt = down - sigma;
      for (int64_t k = 0; k < n; k++) o[k] = s[k] + ((s[k] - pred[k]) / sigma) * dt;
      Tensor noise = rng.randn(x.shape());
      const float* z = noise.f32();
      for (int64_t k = 0; k < n; k++) o[k] = o[k] + z[k] * up;
    }
    return out;
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, size_t i) const override {
    EASEL_CHECK(i < sigmas_.size(), "scheduler", "add_noise: step index out of range (set_timesteps first?)");
    EASEL_CHECK(original.shape() == noise.shape(), "scheduler", "add_noise: shapes differ");
    const float sigma = sigmas_[i];
    Tensor out = Tensor::empty(original.shape());
    const float *a = original.f32(), *z = noise.f32();
    float* o = out.f32();
    for (int64_t k = 0, n = original.numel(); k < n; k++) o[k] = a[k] + z[k] * sigma;
    return out;
  }

 protected:
  // pred_original_sample for a sigma-parameterised step (epsilon or v_prediction), stored in
  // denoised_ and returned.  x, model_output [B, C, h, w]
  float* predict_original(const Tensor& model_output, const Tensor& x, float sigma) {
    const int64_t n = x.numel();
    const float* s = x.f32();
    const float* m = model_output.f32();
    denoised_ = Tensor::empty(x.shape());
    float* pred = denoised_.f32();
    if (cfg_.prediction_type == "epsilon") {
      for (int64_t k = 0; k < n; k++) pred[k] = s[k] - sigma * m[k];
    } else {  // v_prediction
      const float c_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
      const float c_skip = sigma * sigma + 1.0f;
      for (int64_t k = 0; k < n; k++) pred[k] = m[k] * c_out + s[k] / c_skip;
    }
    return pred;
  }

  bool ancestral_;
};

// Heun (2nd order): diffusers repeats every timestep but the first, so N steps run 2N - 1 model
// evaluations; even entries are Euler predictor steps, odd ones the trapezoidal correction.
class HeunScheduler : public EulerScheduler {
 public:
  explicit HeunScheduler(const SchedulerConfig& cfg) : EulerScheduler(with_zero_final(cfg), false) {}

  void set_timesteps(int n) override {
    EulerScheduler::set_timesteps(n);
    // sigmas = [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps = [t0, t1, t1, ..., t_{n-1}, t_{n-1}]
    std::vector<float> sg = {sigmas_.front()}, ts = {timesteps_.front()};
    for (size_t k = 1; k + 1 < sigmas_.size(); k++) sg.insert(sg.end(), 2, sigmas_[k]);
    sg.push_back(sigmas_.back());
    for (size_t k = 1; k < timesteps_.size(); k++) ts.insert(ts.end(), 2, timesteps_[k]);
    sigmas_ = sg;
    timesteps_ = ts;
    first_order_ = true;
  }

  int order() const override { return 2; }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const float sigma = first_order_ ? sigmas_[i] : sigmas_[i - 1];
    const float next = first_order_ ? sigmas_[i + 1] : sigmas_[i];
    const float sig_in = first_order_ ? sigma : next;  // sigma_input
    const int64_t n = x.numel();
    const float* s = x.f32();
    float* pred = predict_original(model_output, x, sig_in);
    if (cfg_.clip_sample)
      for (int64_t k = 0; k < n; k++) pred[k] = std::clamp(pred[k], -1.0f, 1.0f);
    Tensor out = Tensor::empty(x.shape());
    float* o = out.f32();
    if (first_order_) {
      dt_ = next - sigma;
      derivative_ = Tensor::empty(x.shape());
      float* d = derivative_.f32();
      for (int64_t k = 0; k < n; k++) d[k] = (s[k] - pred[k]) / sigma;
      sample_ = x;
      for (int64_t k = 0; k < n; k++) o[k] = s[k] + d[k] * dt_;
      first_order_ = false;
    } else {
      const float* d0 = derivative_.f32();
      const float* s0 = sample_.f32();
      for (int64_t k = 0; k < n; k++) {
        const float d = (d0[k] + (s[k] - pred[k]) / next) / 2.0f;
        o[k] = s0[k] + d * dt_;
      }
      derivative_ = sample_ = Tensor();
      first_order_ = true;
    }
    return out;
  }

 private:
  static SchedulerConfig with_zero_final(SchedulerConfig c) {
    c.final_sigmas_type = "zero";  // Heun has no final_sigmas_type
    return c;
  }
  bool first_order_ = true;
  float dt_ = 0;
  Tensor derivative_, sample_;
};

}  // namespace

// LMS (linear multistep, order 4): x += sum_j c_j * d_{i-j}, c_j = integral over [sigma_i, sigma_{i+1}]
// of the Lagrange basis polynomial through the last sigmas. diffusers integrates with scipy's quad
// (exact for these cubic polynomials up to rounding); a 4-point Gauss-Legendre rule is exact too.
class LMSScheduler : public EulerScheduler {
 public:
  explicit LMSScheduler(const SchedulerConfig& cfg) : EulerScheduler(with_zero_final(cfg), false) {}

  void set_timesteps(int n) override {
    EulerScheduler::set_timesteps(n);
    derivatives_.clear();
  }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const float sigma = sigmas_[i];
    const int64_t n = x.numel();
    const float* s = x.f32();
    const float* pred = predict_original(model_output, x, sigma);
    Tensor d = Tensor::empty(x.shape());
    for (int64_t k = 0; k < n; k++) d.f32()[k] = (s[k] - pred[k]) / sigma;
    derivatives_.push_back(d);
    if (derivatives_.size() > 4) derivatives_.erase(derivatives_.begin());
    const int order = (int)std::min<size_t>(i + 1, 4);
    // sum(coeff * derivative for coeff, derivative in zip(coeffs, reversed(derivatives))), from 0.
    // After an img2img start fewer derivatives than `order` exist; zip stops at the shorter list.
    std::vector<float> acc(n, 0.0f);
    const int terms = std::min(order, (int)derivatives_.size());
    for (int j = 0; j < terms; j++) {
      const float c = (float)lms_coefficient(sigmas_, order, i, j);
      const float* dj = derivatives_[derivatives_.size() - 1 - j].f32();
      for (int64_t k = 0; k < n; k++) acc[k] = acc[k] + c * dj[k];
    }
    Tensor out = Tensor::empty(x.shape());
    for (int64_t k = 0; k < n; k++) out.f32()[k] = s[k] + acc[k];
    return out;
  }

 private:
  static SchedulerConfig with_zero_final(SchedulerConfig c) {
    c.final_sigmas_type = "zero";
    return c;
  }
  std::vector<Tensor> derivatives_;
};

std::unique_ptr<Scheduler> make_lms(const SchedulerConfig& cfg) { return std::make_unique<LMSScheduler>(cfg); }

std::unique_ptr<Scheduler> make_heun(const SchedulerConfig& cfg) { return std::make_unique<HeunScheduler>(cfg); }

std::unique_ptr<Scheduler> make_euler(const SchedulerConfig& cfg, bool ancestral) {
  return std::make_unique<EulerScheduler>(cfg, ancestral);
}

}  // namespace easel::sched
