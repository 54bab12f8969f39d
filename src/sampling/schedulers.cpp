// Shared schedule maths (numpy/torch-exact) and the scheduler factory.
// References: diffusers schedulers/scheduling_euler_discrete.py (_sigma_to_t, _convert_to_karras),
// numpy linspace/arange/interp (numpy/_core/function_base.py, multiarray/compiled_base.c),
// torch linspace/cumprod CPU kernels (RangeFactoriesKernel.cpp, ReduceOpsKernel.cpp).
// Rounding order matters for exactness, so no implicit FMA contraction in this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif
#include "sampling/schedulers.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "sampling/schedule_math.h"

namespace easel {
namespace sched {

// torch.linspace(start, end, steps, dtype=float32) on CPU: float step, start + step*i for the
// first half and end - step*(steps-1-i) for the second, each fused into one FMA by the compiler
// torch is built with (verified bit-exact against torch 2.15).
static std::vector<float> torch_linspace_f32(double start_d, double end_d, int steps) {
  std::vector<float> out(steps);
  const float start = (float)start_d, end = (float)end_d;
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const float step = (end - start) / (float)(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; i++)
    out[i] = i < halfway ? std::fma(step, (float)i, start) : std::fma(-step, (float)(steps - i - 1), end);
  return out;
}

// The shortest decimal that reads back as v (what the config's JSON said), as a double.
double json_decimal(float v) {
  char buf[32];
  for (int prec = 1; prec <= 9; prec++) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
    if ((float)std::strtod(buf, nullptr) == v) break;
  }
  return std::strtod(buf, nullptr);
}

std::vector<float> alphas_cumprod(const SchedulerConfig& cfg) {
  const int n = cfg.num_train_timesteps;
  EASEL_CHECK(n >= 2, "scheduler", "num_train_timesteps must be >= 2");
  std::vector<float> betas;
  if (cfg.beta_schedule == "linear") {
    betas = torch_linspace_f32(cfg.beta_start, cfg.beta_end, n);
  } else if (cfg.beta_schedule == "scaled_linear") {
    // Python computes beta_start ** 0.5 in double from the JSON decimal, which the config holds
    // as float: recover that decimal first.
    betas = torch_linspace_f32(std::sqrt(json_decimal(cfg.beta_start)), std::sqrt(json_decimal(cfg.beta_end)), n);
    for (float& b : betas) b = b * b;
  } else {
    fail("scheduler", "beta_schedule '" + cfg.beta_schedule + "' is not supported (linear, scaled_linear)");
  }
  std::vector<float> ac(n);
  double acc = 1.0;
  for (int i = 0; i < n; i++) {
    acc *= (double)(1.0f - betas[i]);
    ac[i] = (float)acc;
  }
  return ac;
}

std::vector<float> train_sigmas(const std::vector<float>& ac) {
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); i++) s[i] = std::sqrt((1.0f - ac[i]) / ac[i]);
  return s;
}

std::vector<float> log_sigmas(const std::vector<float>& sigmas) {
  std::vector<float> l(sigmas.size());
  for (size_t i = 0; i < sigmas.size(); i++) l[i] = std::log(sigmas[i]);
  return l;
}

std::vector<double> np_linspace(double start, double stop, int num) {
  std::vector<double> y(std::max(num, 0));
  const int div = num - 1;
  const double delta = stop - start;
  if (div > 0) {
    const double step = delta / div;
    for (int i = 0; i < num; i++) y[i] = step == 0 ? (double)i / div * delta : (double)i * step;
  } else {
    for (int i = 0; i < num; i++) y[i] = (double)i * delta;
  }
  for (double& v : y) v += start;
  if (num > 1) y[num - 1] = stop;
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double len_d = std::ceil((stop - start) / step);
  const long len = len_d > 0 ? (long)len_d : 0;
  std::vector<double> y(len);
  if (len > 0) y[0] = start;
  if (len > 1) {
    const double delta = (start + step) - start;
    y[1] = start + step;
    for (long i = 2; i < len; i++) y[i] = start + (double)i * delta;
  }
  return y;
}

std::vector<int64_t> integer_timesteps(const SchedulerConfig& cfg, int n) {
  const int T = cfg.num_train_timesteps;
  std::vector<int64_t> ts;
  if (cfg.timestep_spacing == "linspace") {
    for (double v : np_linspace(0, T - 1, n)) ts.push_back((int64_t)np_round(v));
    std::reverse(ts.begin(), ts.end());
  } else if (cfg.timestep_spacing == "leading") {
    const int ratio = T / n;
    for (int i = n - 1; i >= 0; i--) ts.push_back((int64_t)i * ratio + cfg.steps_offset);
  } else {  // trailing
    for (double v : np_arange(T, 0, -(double)T / n)) ts.push_back((int64_t)np_round(v) - 1);
  }
  return ts;
}

double np_round(double x) { return std::nearbyint(x); }  // default rounding mode: half to even

std::vector<double> np_interp(const std::vector<double>& x, const std::vector<float>& fp) {
  const long n = (long)fp.size();
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double v = x[i];
    if (std::isnan(v)) {
      out[i] = v;
    } else if (v < 0) {
      out[i] = fp[0];
    } else if (v >= (double)(n - 1)) {
      out[i] = fp[n - 1];
    } else {
      const long j = (long)std::floor(v);
      if ((double)j == v) {
        out[i] = fp[j];
      } else {
        const double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
        out[i] = slope * (v - (double)j) + (double)fp[j];
      }
    }
  }
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  const double rho = 7.0;
  const std::vector<double> ramp = np_linspace(0.0, 1.0, n);
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> s(n);
  for (int i = 0; i < n; i++) s[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return s;
}

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const long n = (long)log_sigmas.size();
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // low_idx = cumsum(log_sigma - log_sigmas >= 0).argmax().clip(max=n-2)
  long best = 0, cum = 0, best_cum = -1;
  for (long i = 0; i < n; i++) {
    cum += (log_sigma - (double)log_sigmas[i]) >= 0;
    if (cum > best_cum) best_cum = cum, best = i;
  }
  const long low_idx = std::min(best, n - 2), high_idx = low_idx + 1;
  const float low = log_sigmas[low_idx], high = log_sigmas[high_idx];
  double w = ((double)low - log_sigma) / (double)(low - high);  // (low - high) in float32
  w = std::min(std::max(w, 0.0), 1.0);
  return (1.0 - w) * (double)low_idx + w * (double)high_idx;
}

double lms_coefficient(const std::vector<float>& sigmas, int order, size_t t, int cur) {
  auto basis = [&](double tau) {
    double prod = 1.0;
    for (int k = 0; k < order; k++) {
      if (k == cur) continue;
      prod *= (tau - sigmas[t - k]) / ((double)sigmas[t - cur] - sigmas[t - k]);
    }
    return prod;
  };
  static const double xg[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
  static const double wg[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
  const double a = sigmas[t], b = sigmas[t + 1], half = (b - a) / 2, mid = (a + b) / 2;
  double sum = 0;
  for (int q = 0; q < 4; q++) sum += wg[q] * basis(mid + half * xg[q]);
  return sum * half;
}

}  // namespace sched

// ---------------------------------------------------------------------------------------------

Scheduler::Scheduler(const SchedulerConfig& cfg) : cfg_(cfg) {
  if (cfg_.prediction_type != "epsilon" && cfg_.prediction_type != "v_prediction")
    fail("scheduler", "prediction_type '" + cfg_.prediction_type + "' is not supported (epsilon, v_prediction)");
  if (cfg_.timestep_spacing != "leading" && cfg_.timestep_spacing != "linspace" &&
      cfg_.timestep_spacing != "trailing")
    fail("scheduler", "timestep_spacing '" + cfg_.timestep_spacing + "' is not supported (leading, linspace, trailing)");
  alphas_cumprod_ = sched::alphas_cumprod(cfg_);
}

Scheduler::~Scheduler() = default;

Tensor Scheduler::scale_model_input(const Tensor& x, size_t step_index) const { return x; }

void Scheduler::check_step(const Tensor& model_output, size_t step_index, const Tensor& x) const {
  EASEL_CHECK(!timesteps_.empty(), "scheduler", "step() before set_timesteps()");
  EASEL_CHECK(step_index < timesteps_.size(), "scheduler",
              "step index " + std::to_string(step_index) + " out of range (" +
                  std::to_string(timesteps_.size()) + " timesteps)");
  EASEL_CHECK(model_output.shape() == x.shape(), "scheduler",
              "model output " + model_output.str() + " and sample " + x.str() + " differ in shape");
  model_output.check_dtype(DType::F32);
  x.check_dtype(DType::F32);
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& sampler, const std::string& schedule,
                                          const SchedulerConfig& cfg_in) {
  SchedulerConfig cfg = cfg_in;
  if (schedule == "karras")
    cfg.use_karras_sigmas = true;
  else if (schedule == "normal")
    cfg.use_karras_sigmas = false;
  else if (!schedule.empty())
    fail("scheduler", "unknown schedule '" + schedule + "' (expected normal or karras)");
  if (cfg.timestep_spacing.empty())  // the class default, as diffusers' from_config without the key
    cfg.timestep_spacing = (sampler == "ddim" || sampler == "pndm" || sampler == "plms") ? "leading" : "linspace";
  if (sampler == "euler") return sched::make_euler(cfg, false);
  if (sampler == "euler_a") return sched::make_euler(cfg, true);
  if (sampler == "heun") return sched::make_heun(cfg);
  if (sampler == "lms") return sched::make_lms(cfg);
  if (sampler.rfind("k_", 0) == 0) return sched::make_kdiffusion(cfg, sampler);
  if (sampler == "ddim") {
    if (cfg.use_karras_sigmas) fail("scheduler", "ddim has no karras schedule");
    return sched::make_ddim(cfg);
  }
  if (sampler == "dpmpp_2m") return sched::make_dpmpp_2m(cfg, false);
  if (sampler == "dpmpp_2m_sde") return sched::make_dpmpp_2m(cfg, true);
  if (sampler == "pndm" || sampler == "plms") {
    if (cfg.use_karras_sigmas) fail("scheduler", "pndm has no karras schedule");
    return sched::make_pndm(cfg);
  }
  fail("scheduler", "unknown sampler '" + sampler + "' (expected euler, euler_a, heun, lms, ddim, dpmpp_2m, dpmpp_2m_sde, pndm, k_euler, k_euler_a, k_dpmpp_2m, k_heun or k_lms)");
}

namespace {
// A1111 runs Euler, Euler a, DPM++ 2M, Heun and LMS through k-diffusion: those names parse to the
// k_ ports (listed first); the others to the diffusers equivalents.
const std::pair<const char*, const char*> kA1111Names[] = {
    {"k_euler_a", "Euler a"}, {"k_euler", "Euler"}, {"k_dpmpp_2m", "DPM++ 2M"}, {"k_heun", "Heun"},
    {"k_lms", "LMS"},         {"euler_a", "Euler a"}, {"euler", "Euler"},       {"dpmpp_2m", "DPM++ 2M"},
    {"heun", "Heun"},         {"lms", "LMS"},         {"dpmpp_2m_sde", "DPM++ 2M SDE"},
    {"ddim", "DDIM"},         {"pndm", "PLMS"}};

std::string lower(std::string s) {
  for (char& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}
}  // namespace

void parse_a1111_sampler(const std::string& name_in, const std::string& schedule_type, std::string* sampler,
                         std::string* schedule) {
  std::string name = lower(name_in);
  while (!name.empty() && name.back() == ' ') name.pop_back();
  std::string sched = "normal";
  const std::string karras = " karras";
  if (name.size() > karras.size() && name.compare(name.size() - karras.size(), karras.size(), karras) == 0) {
    name.resize(name.size() - karras.size());
    sched = "karras";
  }
  const std::string st = lower(schedule_type);
  if (st == "karras")
    sched = "karras";
  else if (!st.empty() && st != "automatic" && st != "normal" && st != "uniform")
    fail("scheduler", "schedule type '" + schedule_type + "' is not supported (Karras, Automatic)");
  for (const auto& [ours, theirs] : kA1111Names)
    if (name == lower(theirs) || name == ours) {
      *sampler = ours;
      // A1111 >= 1.9: "Automatic" is the sampler's own default, Karras for DPM++ 2M.
      if (st == "automatic" && std::string(ours) == "k_dpmpp_2m") sched = "karras";
      *schedule = sched;
      return;
    }
  fail("scheduler", "sampler '" + name_in + "' is not supported (Euler, Euler a, Heun, LMS, DPM++ 2M [SDE] [Karras], DDIM, PLMS)");
}

std::string a1111_sampler_name(const std::string& sampler, const std::string& schedule) {
  for (const auto& [ours, theirs] : kA1111Names)
    if (sampler == ours) return std::string(theirs) + (schedule == "karras" ? " Karras" : "");
  fail("scheduler", "unknown sampler '" + sampler + "'");
}

size_t Scheduler::img2img_start(int num_inference_steps, double strength) const {
  const int init_timestep = std::min((int)(num_inference_steps * strength), num_inference_steps);
  const int t_start = std::max(num_inference_steps - init_timestep, 0);
  return (size_t)t_start * (size_t)order();
}

size_t img2img_start_index(const Scheduler& s, int num_inference_steps, double strength) {
  EASEL_CHECK(strength >= 0.0 && strength <= 1.0, "scheduler", "img2img strength must be in [0, 1]");
  // A value that came through a float (0.7f = 0.699999988) means the decimal the user typed:
  // Python's int(20 * 0.7) is 14, int(20 * 0.699999988) would be 13.
  if ((double)(float)strength == strength) strength = sched::json_decimal((float)strength);
  return s.img2img_start(num_inference_steps, strength);
}

}  // namespace easel
