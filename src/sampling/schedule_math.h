// Internal: the numeric building blocks shared by the schedulers, each reproducing the exact
// numpy/torch operation diffusers uses (dtype and rounding order), and the per-sampler factories.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"

namespace easel {
class Scheduler;
}

namespace easel::sched {

// torch: betas = linspace(...) (** 2 for scaled_linear), float32; alphas_cumprod = cumprod(1 - betas)
// (torch accumulates the product in double, stores float32).
std::vector<float> alphas_cumprod(const SchedulerConfig& cfg);
// torch float32: ((1 - ac) / ac) ** 0.5, ascending in t.
std::vector<float> train_sigmas(const std::vector<float>& ac);
// numpy float32 log of the above.
std::vector<float> log_sigmas(const std::vector<float>& sigmas);

// The shortest decimal that reads back as the float v (e.g. a JSON value held as float), as double.
double json_decimal(float v);
// numpy.linspace(start, stop, num) in float64.
std::vector<double> np_linspace(double start, double stop, int num);
// numpy.arange(start, stop, step) in float64 (length and fill as numpy computes them).
std::vector<double> np_arange(double start, double stop, double step);
// Integer training timesteps for n inference steps, descending (DDIMScheduler's order), per the
// config's timestep_spacing (linspace | leading | trailing) and steps_offset. "trailing" may end in
// -1 for some n (numpy.arange's extra element), as in diffusers.
std::vector<int64_t> integer_timesteps(const SchedulerConfig& cfg, int n);
// numpy.round (half to even).
double np_round(double x);
// numpy.interp(x, arange(len(fp)), fp) in float64.
std::vector<double> np_interp(const std::vector<double>& x, const std::vector<float>& fp);
// diffusers _convert_to_karras: rho = 7 ramp from sigma_max to sigma_min (float64).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// diffusers _sigma_to_t: fractional timestep of sigma by interpolating log_sigmas.
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);

// LMS coefficient: integral over [sigmas[t], sigmas[t+1]] of the Lagrange basis polynomial `cur`
// through sigmas[t], sigmas[t-1], ..., sigmas[t-order+1] (diffusers get_lms_coefficient /
// k-diffusion linear_multistep_coeff, which use scipy quad; 4-point Gauss-Legendre is exact here).
double lms_coefficient(const std::vector<float>& sigmas, int order, size_t t, int cur);

// Factories (one per sampler file).
std::unique_ptr<Scheduler> make_euler(const SchedulerConfig& cfg, bool ancestral);
std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& cfg);
std::unique_ptr<Scheduler> make_dpmpp_2m(const SchedulerConfig& cfg, bool sde);
std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& cfg);
std::unique_ptr<Scheduler> make_heun(const SchedulerConfig& cfg);
std::unique_ptr<Scheduler> make_lms(const SchedulerConfig& cfg);
std::unique_ptr<Scheduler> make_kdiffusion(const SchedulerConfig& cfg, const std::string& sampler);

}  // namespace easel::sched
