// k-diffusion samplers as AUTOMATIC1111's webui runs them (CompVisDenoiser over the LDM
// alphas_cumprod): "k_euler", "k_euler_a", "k_dpmpp_2m", "k_heun", "k_lms" with schedule "normal" (k-diffusion's
// DiscreteSchedule.get_sigmas: log-sigma interpolation at linspace(999, 0, n)) or "karras"
// (get_sigmas_karras between the model's sigma_min and sigma_max). The UNet gets the fractional
// timestep sigma_to_t(sigma); initial noise is scaled by sigmas[0]. epsilon models use
// CompVisDenoiser's scalings, v_prediction models CompVisVDenoiser's.
// https://github.com/crowsonkb/k-diffusion/blob/master/k_diffusion/{sampling,external}.py
// Arithmetic follows k-diffusion's torch float32 ops; the LDM schedule is built in float64 like
// ldm/models/diffusion/ddpm.py register_schedule.
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

// torch.linspace on CPU, float32 or float64 (FMA as torch's build contracts it).
template <class T>
std::vector<T> torch_linspace(double start_d, double end_d, int steps) {
  std::vector<T> out(steps);
  const T start = (T)start_d, end = (T)end_d;
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const T step = (end - start) / (T)(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; i++)
    out[i] = i < halfway ? std::fma(step, (T)i, start) : std::fma(-step, (T)(steps - i - 1), end);
  return out;
}

class KDiffusionScheduler : public Scheduler {
 public:
  enum class Kind { Euler, EulerAncestral, DPMpp2M, Heun, LMS };
  KDiffusionScheduler(const SchedulerConfig& cfg, Kind kind) : Scheduler(cfg), kind_(kind) {
    // LDM register_schedule: betas in float64 ("linear" in LDM = diffusers' scaled_linear), numpy
    // cumprod in float64, stored as a float32 buffer.
    const int n = cfg_.num_train_timesteps;
    std::vector<double> betas;
    if (cfg_.beta_schedule == "scaled_linear") {
      betas = torch_linspace<double>(std::sqrt(json_decimal(cfg_.beta_start)), std::sqrt(json_decimal(cfg_.beta_end)), n);
      for (double& b : betas) b = b * b;
    } else {  // "linear" (validated by alphas_cumprod in the base class)
      betas = torch_linspace<double>(json_decimal(cfg_.beta_start), json_decimal(cfg_.beta_end), n);
    }
    double acc = 1.0;
    ac_.resize(n);
    for (int i = 0; i < n; i++) {
      acc *= 1.0 - betas[i];
      ac_[i] = (float)acc;
    }
    alphas_cumprod_ = ac_;
    train_ = train_sigmas(ac_);
    logs_ = log_sigmas(train_);
  }

  void set_timesteps(int n) override {
    EASEL_CHECK(n >= 1, "scheduler", "num_inference_steps must be >= 1");
    std::vector<float> sig;
    if (!cfg_.use_karras_sigmas) {
      // DiscreteSchedule.get_sigmas -> t_to_sigma(linspace(t_max, 0, n))
      for (float t : torch_linspace<float>((double)train_.size() - 1, 0.0, n)) {
        const int64_t lo = (int64_t)std::floor(t), hi = (int64_t)std::ceil(t);
        const float w = t - std::trunc(t);
        sig.push_back(std::exp((1.0f - w) * logs_[lo] + w * logs_[hi]));
      }
    } else {
      // get_sigmas_karras(n, sigma_min, sigma_max, rho=7): float32 tensor maths on python floats
      const double rho = 7.0;
      const double min_inv = std::pow((double)train_.front(), 1.0 / rho);
      const double max_inv = std::pow((double)train_.back(), 1.0 / rho);
      const float span = (float)(min_inv - max_inv), base = (float)max_inv;
      for (float r : torch_linspace<float>(0.0, 1.0, n)) sig.push_back(std::pow(r * span + base, 7.0f));
    }
    sig.push_back(0.0f);
    if (kind_ == Kind::Heun) {
      // sample_heun evaluates at sigma_i and (unless sigma_{i+1} = 0) at sigma_{i+1}:
      // one entry per evaluation, [s0, s1, s1, s2, s2, ..., s_{n-1}, s_{n-1}] + final 0.
      std::vector<float> inter = {sig[0]};
      for (int i = 1; i < n; i++) inter.insert(inter.end(), 2, sig[i]);
      inter.push_back(0.0f);
      sig = inter;
    }
    sigmas_ = sig;
    timesteps_.clear();
    for (size_t i = 0; i + 1 < sigmas_.size(); i++) timesteps_.push_back(sigma_to_t_f32(sigmas_[i]));
    old_denoised_ = Tensor();
    heun_first_ = true;
    derivatives_.clear();
  }

  int order() const override { return kind_ == Kind::Heun ? 2 : 1; }

  float init_noise_sigma() const override {
    EASEL_CHECK(!sigmas_.empty(), "scheduler", "init_noise_sigma() before set_timesteps()");
    return sigmas_[0];
  }

  Tensor scale_model_input(const Tensor& x, size_t i) const override {
    EASEL_CHECK(i < timesteps_.size(), "scheduler", "scale_model_input: step index out of range");
    const float sigma = sigmas_[i];
    const float c_in = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    Tensor out = Tensor::empty(x.shape());
    for (int64_t k = 0, n = x.numel(); k < n; k++) out.f32()[k] = x.f32()[k] * c_in;
    return out;
  }

  Tensor step(const Tensor& model_output, size_t i, const Tensor& x, Rng& rng) override {
    check_step(model_output, i, x);
    const float sigma = sigmas_[i], next = sigmas_[i + 1];
    const int64_t n = x.numel();
    const float* s = x.f32();
    const float* e = model_output.f32();
    denoised_ = Tensor::empty(x.shape());
    float* den = denoised_.f32();
    if (cfg_.prediction_type == "epsilon") {  // DiscreteEpsDDPMDenoiser (CompVisDenoiser)
      const float c_out = -sigma;
      for (int64_t k = 0; k < n; k++) den[k] = s[k] + e[k] * c_out;
    } else {  // DiscreteVDDPMDenoiser (CompVisVDenoiser)
      const float c_skip = 1.0f / (sigma * sigma + 1.0f);
      const float c_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
      for (int64_t k = 0; k < n; k++) den[k] = e[k] * c_out + s[k] * c_skip;
    }
    Tensor out = Tensor::empty(x.shape());
    float* o = out.f32();
    if (kind_ == Kind::Euler) {
      const float dt = next - sigma;
      for (int64_t k = 0; k < n; k++) o[k] = s[k] + ((s[k] - den[k]) / sigma) * dt;
    } else if (kind_ == Kind::EulerAncestral) {
      const float up = std::min(next, std::sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma)));
      const float down = std::sqrt(next * next - up * up);
      const float dt = down - sigma;
      for (int64_t k = 0; k < n; k++) o[k] = s[k] + ((s[k] - den[k]) / sigma) * dt;
      if (next > 0) {
        Tensor noise = rng.randn(x.shape());
        for (int64_t k = 0; k < n; k++) o[k] = o[k] + noise.f32()[k] * up;
      }
    } else if (kind_ == Kind::Heun) {
      if (heun_first_) {
        const float dt = next - sigma;
        Tensor d = Tensor::empty(x.shape());
        for (int64_t k = 0; k < n; k++) d.f32()[k] = (s[k] - den[k]) / sigma;
        for (int64_t k = 0; k < n; k++) o[k] = s[k] + d.f32()[k] * dt;  // Euler (final) or predictor
        if (next != 0.0f) {
          heun_d_ = d, heun_x_ = x, heun_dt_ = dt;
          heun_first_ = false;
        }
      } else {  // corrector at sigma_{i+1} = sigma here
        const float* d0 = heun_d_.f32();
        const float* x0 = heun_x_.f32();
        for (int64_t k = 0; k < n; k++) {
          const float d2 = (s[k] - den[k]) / sigma;
          o[k] = x0[k] + ((d0[k] + d2) / 2.0f) * heun_dt_;
        }
        heun_d_ = heun_x_ = Tensor();
        heun_first_ = true;
      }
    } else if (kind_ == Kind::LMS) {
      Tensor d = Tensor::empty(x.shape());
      for (int64_t k = 0; k < n; k++) d.f32()[k] = (s[k] - den[k]) / sigma;
      derivatives_.push_back(d);
      if (derivatives_.size() > 4) derivatives_.erase(derivatives_.begin());
      const int cur_order = (int)derivatives_.size();  // min(steps taken, 4)
      std::vector<float> acc(n, 0.0f);
      for (int j = 0; j < cur_order; j++) {
        const float c = (float)lms_coefficient(sigmas_, cur_order, i, j);
        const float* dj = derivatives_[derivatives_.size() - 1 - j].f32();
        for (int64_t k = 0; k < n; k++) acc[k] = acc[k] + c * dj[k];
      }
      for (int64_t k = 0; k < n; k++) o[k] = s[k] + acc[k];
    } else {  // DPM-Solver++(2M)
      const float t = -std::log(sigma), t_next = -std::log(next);
      const float h = t_next - t;
      const float ratio = std::exp(-t_next) / std::exp(-t);
      const float em1 = std::expm1(-h);
      if (!old_denoised_.defined() || next == 0.0f || i == 0) {
        for (int64_t k = 0; k < n; k++) o[k] = ratio * s[k] - em1 * den[k];
      } else {
        const float h_last = t - (-std::log(sigmas_[i - 1]));
        const float r = h_last / h;
        const float c_old = 1.0f / (2.0f * r), c_new = 1.0f + c_old;
        const float* od = old_denoised_.f32();
        for (int64_t k = 0; k < n; k++) o[k] = ratio * s[k] - em1 * (c_new * den[k] - c_old * od[k]);
      }
      old_denoised_ = denoised_;
    }
    return out;
  }

  // A1111 sample_img2img: t_enc = int(min(strength, 0.999) * steps); sigmas[steps - t_enc - 1:]
  // (img2img_fix_steps off, the default).
  size_t img2img_start(int steps, double strength) const override {
    const int t_enc = (int)(std::min(strength, 0.999) * steps);
    const size_t start = (size_t)std::max(steps - t_enc - 1, 0);
    return kind_ == Kind::Heun ? 2 * start : start;  // step b starts at evaluation 2b
  }

  Tensor add_noise(const Tensor& original, const Tensor& noise, size_t i) const override {
    EASEL_CHECK(i < sigmas_.size(), "scheduler", "add_noise: step index out of range (set_timesteps first?)");
    EASEL_CHECK(original.shape() == noise.shape(), "scheduler", "add_noise: shapes differ");
    const float sigma = sigmas_[i];
    Tensor out = Tensor::empty(original.shape());
    for (int64_t k = 0, n = original.numel(); k < n; k++)
      out.f32()[k] = original.f32()[k] + noise.f32()[k] * sigma;
    return out;
  }

 private:
  // DiscreteSchedule.sigma_to_t in float32.
  float sigma_to_t_f32(float sigma) const {
    const float log_sigma = std::log(sigma);
    const int64_t n = (int64_t)logs_.size();
    int64_t best = 0, cum = 0, best_cum = -1;
    for (int64_t j = 0; j < n; j++) {
      cum += (log_sigma - logs_[j]) >= 0.0f;
      if (cum > best_cum) best_cum = cum, best = j;
    }
    const int64_t lo = std::min(best, n - 2), hi = lo + 1;
    float w = (logs_[lo] - log_sigma) / (logs_[lo] - logs_[hi]);
    w = std::min(std::max(w, 0.0f), 1.0f);
    return (1.0f - w) * (float)lo + w * (float)hi;
  }

  Kind kind_;
  std::vector<float> ac_, train_, logs_;
  Tensor old_denoised_;                 // dpm++ 2m
  bool heun_first_ = true;              // heun: predictor (true) or corrector next
  Tensor heun_d_, heun_x_;
  float heun_dt_ = 0;
  std::vector<Tensor> derivatives_;     // lms
};

}  // namespace

std::unique_ptr<Scheduler> make_kdiffusion(const SchedulerConfig& cfg, const std::string& sampler) {
  using K = KDiffusionScheduler::Kind;
  if (sampler == "k_euler") return std::make_unique<KDiffusionScheduler>(cfg, K::Euler);
  if (sampler == "k_euler_a") return std::make_unique<KDiffusionScheduler>(cfg, K::EulerAncestral);
  if (sampler == "k_dpmpp_2m") return std::make_unique<KDiffusionScheduler>(cfg, K::DPMpp2M);
  if (sampler == "k_heun") return std::make_unique<KDiffusionScheduler>(cfg, K::Heun);
  if (sampler == "k_lms") return std::make_unique<KDiffusionScheduler>(cfg, K::LMS);
  fail("scheduler", "unknown k-diffusion sampler '" + sampler + "'");
}

}  // namespace easel::sched
