// Scheduler parity with diffusers 0.42: timestep/sigma tables (ref_schedules.safetensors) and the
// model-free 5-step sampler loops (ref_sampler_loop.safetensors, fake model
// 0.3 * x_in + 0.0005 * t), both from tools/gen_fixtures.py; plus extra configurations (all
// spacings, linear betas, sigma_min, trailing, img2img) from tools/gen_sampler_extra.py.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common.h"
#include "sampling/rng.h"
#include "sampling/schedulers.h"

using namespace easel;
using nlohmann::json;

namespace {

// Python's json writes -Infinity (lambda_min_clipped); nlohmann rejects it.
json parse_meta(std::string text) {
  for (size_t p; (p = text.find("Infinity")) != std::string::npos;) text.replace(p, 8, "1e308");
  return json::parse(text);
}

SchedulerConfig config_from_json(const json& j) {
  SchedulerConfig c;
  c.num_train_timesteps = j.value("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = j.value("beta_start", c.beta_start);
  c.beta_end = j.value("beta_end", c.beta_end);
  c.beta_schedule = j.value("beta_schedule", c.beta_schedule);
  c.prediction_type = j.value("prediction_type", c.prediction_type);
  c.timestep_spacing = j.value("timestep_spacing", c.timestep_spacing);
  c.steps_offset = j.value("steps_offset", c.steps_offset);
  c.set_alpha_to_one = j.value("set_alpha_to_one", c.set_alpha_to_one);
  c.clip_sample = j.value("clip_sample", c.clip_sample);
  c.interpolation_type = j.value("interpolation_type", c.interpolation_type);
  c.use_karras_sigmas = j.value("use_karras_sigmas", c.use_karras_sigmas);
  c.final_sigmas_type = j.value("final_sigmas_type", c.final_sigmas_type);
  c.lower_order_final = j.value("lower_order_final", c.lower_order_final);
  c.euler_at_final = j.value("euler_at_final", c.euler_at_final);
  return c;
}

// "euler_karras" -> ("euler", "karras")
std::pair<std::string, std::string> split_sampler(const std::string& name) {
  const std::string suffix = "_karras";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return {name.substr(0, name.size() - suffix.size()), "karras"};
  return {name, "normal"};
}

Tensor vec_tensor(const std::vector<float>& v) { return Tensor::from_vector(v, {(int64_t)v.size()}); }

double max_rel(const std::vector<float>& a, const Tensor& b) {
  double m = 0;
  const float* pb = b.f32();
  for (size_t i = 0; i < a.size(); i++)
    m = std::max(m, std::fabs((double)a[i] - pb[i]) / std::max(1e-3, std::fabs((double)pb[i])));
  return m;
}

Tensor fake_model(const Tensor& x_in, float t) {  // 0.3 * x_in + 0.0005 * float(t), torch float32
  Tensor out = Tensor::empty(x_in.shape());
  const float add = (float)(0.0005 * (double)t);
  for (int64_t k = 0; k < x_in.numel(); k++) out.f32()[k] = x_in.f32()[k] * 0.3f + add;
  return out;
}

const char* kSamplers[] = {"euler", "euler_karras", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras"};

}  // namespace

TEST(Schedules, AlphasCumprodBitExact) {
  WeightStore ref = test::load_ref("schedulers/ref_schedules.safetensors");
  for (const char* cfg : {"sd1", "sd2"}) {
    json j = parse_meta(ref.metadata.at(std::string(cfg) + ".euler.config"));
    auto s = make_scheduler("euler", "normal", config_from_json(j));
    const Tensor& want = ref.get(std::string(cfg) + ".alphas_cumprod", {1000});
    EXPECT_TRUE(test::allclose(vec_tensor(s->alphas_cumprod()), want, 0, 0)) << cfg;
  }
}

TEST(Schedules, TimestepsAndSigmasMatchDiffusers) {
  WeightStore ref = test::load_ref("schedulers/ref_schedules.safetensors");
  double worst_t = 0, worst_s = 0;
  for (const char* cfg : {"sd1", "sd2"})
    for (const char* sampler : kSamplers)
      for (int n : {1, 2, 5, 20, 30}) {
        const std::string key = std::string(cfg) + "." + sampler + ".n" + std::to_string(n);
        json j = parse_meta(ref.metadata.at(std::string(cfg) + "." + sampler + ".config"));
        auto [name, schedule] = split_sampler(sampler);
        auto s = make_scheduler(name, schedule, config_from_json(j));
        s->set_timesteps(n);
        const Tensor& ts = ref.get(key + ".timesteps");
        // 1e-6 relative (fp64 numpy vs fp64 here; the float32 rounding dominates).
        EXPECT_TRUE(test::allclose(vec_tensor(s->timesteps()), ts, 1e-4f, 1e-6f)) << key;
        worst_t = std::max(worst_t, max_rel(s->timesteps(), ts));
        if (ref.has(key + ".sigmas")) {
          const Tensor& sg = ref.get(key + ".sigmas");
          EXPECT_TRUE(test::allclose(vec_tensor(s->sigmas()), sg, 1e-7f, 1e-6f)) << key;
          worst_s = std::max(worst_s, max_rel(s->sigmas(), sg));
        } else {
          EXPECT_TRUE(s->sigmas().empty()) << key;
        }
        const Tensor& ins = ref.get(key + ".init_noise_sigma", {1});
        EXPECT_NEAR(s->init_noise_sigma(), ins.f32()[0], 1e-6 * std::max(1.0f, ins.f32()[0])) << key;
      }
  std::printf("schedules: max rel err timesteps %.3g, sigmas %.3g\n", worst_t, worst_s);
}

TEST(SamplerLoop, FiveStepsMatchDiffusers) {
  WeightStore ref = test::load_ref("schedulers/ref_sampler_loop.safetensors");
  WeightStore sched = test::load_ref("schedulers/ref_schedules.safetensors");
  const Shape shape = {1, 4, 8, 8};
  for (const char* cfg : {"sd1", "sd2"})
    for (const char* sampler : kSamplers) {
      const std::string p = std::string(cfg) + "." + sampler + ".";
      json j = parse_meta(sched.metadata.at(p + "config"));
      auto [name, schedule] = split_sampler(sampler);
      auto s = make_scheduler(name, schedule, config_from_json(j));
      s->set_timesteps(5);
      auto rng = make_rng("torch-cpu", 1234);
      Tensor noise = rng->randn(shape);
      ASSERT_TRUE(test::allclose(noise, ref.get(p + "noise", shape), 0, 0)) << p;
      Tensor x = Tensor::empty(shape);
      for (int64_t k = 0; k < x.numel(); k++) x.f32()[k] = noise.f32()[k] * s->init_noise_sigma();
      EXPECT_TRUE(test::allclose(x, ref.get(p + "init", shape), 0, 1e-6f)) << p;
      ASSERT_EQ(s->timesteps().size(), 5u) << p;
      double worst = 0;
      for (size_t i = 0; i < 5; i++) {
        const std::string si = std::to_string(i);
        Tensor x_in = s->scale_model_input(x, i);
        EXPECT_TRUE(test::allclose(x_in, ref.get(p + "x_in_" + si, shape), 1e-6f, 1e-5f)) << p << i;
        Tensor mo = fake_model(x_in, s->timesteps()[i]);
        EXPECT_TRUE(test::allclose(mo, ref.get(p + "model_output_" + si, shape), 1e-6f, 1e-5f)) << p << i;
        x = s->step(mo, i, x, *rng);
        const Tensor& want = ref.get(p + "step_" + si, shape);
        // 1e-5: float32 chains of 5 steps; diffusers' own torch ops round differently (libm/VML).
        EXPECT_TRUE(test::allclose(x, want, 1e-5f, 1e-5f)) << p << "step " << i;
        if (ref.has(p + "denoised_" + si)) {
          EXPECT_TRUE(test::allclose(s->last_denoised(), ref.get(p + "denoised_" + si, shape), 1e-5f, 1e-5f))
              << p << "denoised " << i;
        }
        for (int64_t k = 0; k < x.numel(); k++)
          worst = std::max(worst, (double)std::fabs(x.f32()[k] - want.f32()[k]) / (1.0 + std::fabs(want.f32()[k])));
      }
      EXPECT_TRUE(test::allclose(x, ref.get(p + "final", shape), 1e-5f, 1e-5f)) << p;
      std::printf("loop %-22s max err after each step (abs/(1+|ref|)): %.3g\n", p.c_str(), worst);
    }
}

TEST(Img2Img, StartIndexAsDiffusers) {
  SchedulerConfig cfg;
  auto s = make_scheduler("euler", "normal", cfg);
  s->set_timesteps(20);
  EXPECT_EQ(img2img_start_index(*s, 20, 0.75), 5u);   // int(15.0) = 15 -> 20 - 15
  EXPECT_EQ(img2img_start_index(*s, 20, 0.7), 6u);    // 20 * 0.7 = 14.0 in double
  EXPECT_EQ(img2img_start_index(*s, 20, 0.7f), 6u);   // 0.7f means 0.7, not 0.699999988
  EXPECT_EQ(img2img_start_index(*s, 30, 0.33), 21u);  // int(9.9) = 9
  EXPECT_EQ(img2img_start_index(*s, 20, 1.0), 0u);
  EXPECT_EQ(img2img_start_index(*s, 20, 0.0), 20u);
  EXPECT_THROW(img2img_start_index(*s, 20, 1.5), Error);
  auto h = make_scheduler("heun", "normal", cfg);  // order 2
  h->set_timesteps(20);
  EXPECT_EQ(img2img_start_index(*h, 20, 0.75), 10u);
  auto k = make_scheduler("k_euler_a", "normal", cfg);  // A1111: steps - int(min(s, .999) * steps) - 1
  k->set_timesteps(20);
  EXPECT_EQ(img2img_start_index(*k, 20, 0.75), 4u);
  EXPECT_EQ(img2img_start_index(*k, 20, 1.0), 0u);   // int(0.999 * 20) = 19
  EXPECT_EQ(img2img_start_index(*k, 20, 0.0), 19u);
}

TEST(Schedulers, A1111Names) {
  std::string sampler, schedule;
  parse_a1111_sampler("DPM++ 2M Karras", "", &sampler, &schedule);
  EXPECT_EQ(sampler, "k_dpmpp_2m");
  EXPECT_EQ(schedule, "karras");
  parse_a1111_sampler("Euler a", "Automatic", &sampler, &schedule);
  EXPECT_EQ(sampler, "k_euler_a");
  EXPECT_EQ(schedule, "normal");
  parse_a1111_sampler("DPM++ 2M", "Karras", &sampler, &schedule);
  EXPECT_EQ(schedule, "karras");
  parse_a1111_sampler("DPM++ 2M", "Automatic", &sampler, &schedule);
  EXPECT_EQ(schedule, "karras");
  parse_a1111_sampler("DPM++ 2M", "", &sampler, &schedule);
  EXPECT_EQ(schedule, "normal");
  parse_a1111_sampler("plms", "", &sampler, &schedule);
  EXPECT_EQ(sampler, "pndm");
  EXPECT_THROW(parse_a1111_sampler("DPM++ SDE", "", &sampler, &schedule), Error);
  EXPECT_THROW(parse_a1111_sampler("Euler", "Exponential", &sampler, &schedule), Error);
  EXPECT_EQ(a1111_sampler_name("dpmpp_2m", "karras"), "DPM++ 2M Karras");
  EXPECT_EQ(a1111_sampler_name("euler_a", "normal"), "Euler a");
  EXPECT_EQ(a1111_sampler_name("k_euler_a", "normal"), "Euler a");
  parse_a1111_sampler("dpmpp_2m_sde", "Karras", &sampler, &schedule);
  EXPECT_EQ(sampler, "dpmpp_2m_sde");
  EXPECT_EQ(a1111_sampler_name(sampler, schedule), "DPM++ 2M SDE Karras");
}

TEST(Schedulers, ErrorsNameTheProblem) {
  SchedulerConfig cfg;
  EXPECT_THROW(make_scheduler("unipc", "normal", cfg), Error);
  EXPECT_THROW(make_scheduler("euler", "exponential", cfg), Error);
  EXPECT_THROW(make_scheduler("ddim", "karras", cfg), Error);
  cfg.prediction_type = "sample";
  EXPECT_THROW(make_scheduler("euler", "normal", cfg), Error);
  SchedulerConfig ok;
  auto s = make_scheduler("dpmpp_2m", "normal", ok);
  auto rng = make_rng("torch-cpu", 0);
  Tensor x = rng->randn({1, 4, 2, 2});
  EXPECT_THROW(s->step(x, 0, x, *rng), Error);  // before set_timesteps
  s->set_timesteps(4);
  EXPECT_THROW(s->step(x, 4, x, *rng), Error);  // out of range
}

// ---------------------------------------------------------------------------------------------
// Extra configurations (tools/gen_sampler_extra.py).

namespace {

struct ExtraCase {
  std::string sampler, schedule;
  int steps = 0;
  bool loop = false;
  double strength = 0;
  SchedulerConfig cfg;
};

ExtraCase extra_case(const WeightStore& ref, const std::string& name) {
  json j = parse_meta(ref.metadata.at(name));
  ExtraCase c;
  c.sampler = j["sampler"];
  c.schedule = j["schedule"];
  c.steps = j["steps"];
  c.loop = j.value("loop", false);
  c.strength = j.value("strength", 0.0);
  // Defaults of the diffusers classes where the case leaves a field out.
  json cj = j["config"];
  SchedulerConfig& k = c.cfg;
  k = config_from_json(cj);
  if (!cj.contains("steps_offset")) k.steps_offset = 0;
  if (!cj.contains("timestep_spacing"))
    k.timestep_spacing = c.sampler == "ddim" || c.sampler == "pndm" ? "leading" : "linspace";
  return c;
}

}  // namespace

TEST(SchedulesExtra, AllSpacingsBetasPredictionsAndKarras) {
  WeightStore ref = test::load_ref("schedulers/ref_sampler_extra.safetensors");
  const Shape shape = {1, 4, 4, 4};
  int cases = 0, loops = 0;
  double worst_sched = 0, worst_loop = 0;
  for (int k = 0;; k++) {
    const std::string p = "c" + std::to_string(k);
    if (!ref.metadata.count(p)) break;
    ExtraCase c = extra_case(ref, p);
    auto s = make_scheduler(c.sampler, c.schedule, c.cfg);
    s->set_timesteps(c.steps);
    const std::string what = p + " " + ref.metadata.at(p);
    const Tensor& ts = ref.get(p + ".timesteps");
    EXPECT_TRUE(test::allclose(vec_tensor(s->timesteps()), ts, 1e-4f, 1e-6f)) << what;
    worst_sched = std::max(worst_sched, max_rel(s->timesteps(), ts));
    if (ref.has(p + ".sigmas")) {
      const Tensor& sg = ref.get(p + ".sigmas");
      EXPECT_TRUE(test::allclose(vec_tensor(s->sigmas()), sg, 1e-7f, 1e-6f)) << what;
      worst_sched = std::max(worst_sched, max_rel(s->sigmas(), sg));
    }
    const float ins = ref.get(p + ".init_noise_sigma", {1}).f32()[0];
    EXPECT_NEAR(s->init_noise_sigma(), ins, 1e-6 * std::max(1.0f, ins)) << what;
    cases++;
    if (!c.loop) continue;
    auto rng = make_rng("torch-cpu", 99);
    Tensor x = rng->randn(shape);
    for (int64_t e = 0; e < x.numel(); e++) x.f32()[e] *= s->init_noise_sigma();
    for (size_t i = 0; i < s->timesteps().size(); i++) {
      Tensor mo = fake_model(s->scale_model_input(x, i), s->timesteps()[i]);
      x = s->step(mo, i, x, *rng);
      const Tensor& want = ref.get(p + ".step_" + std::to_string(i), shape);
      EXPECT_TRUE(test::allclose(x, want, 1e-5f, 1e-5f)) << what << " step " << i;
      for (int64_t e = 0; e < x.numel(); e++)
        worst_loop = std::max(worst_loop, (double)std::fabs(x.f32()[e] - want.f32()[e]) / (1.0 + std::fabs(want.f32()[e])));
    }
    loops++;
    if (getenv("EASEL_VERBOSE")) std::printf("%s worst so far %.3g\n", what.c_str(), worst_loop);
  }
  EXPECT_EQ(cases, 324);
  EXPECT_GT(loops, 80);
  std::printf("extra: %d schedules (max rel err %.3g), %d loops (max err %.3g)\n", cases, worst_sched, loops,
              worst_loop);
}

TEST(SchedulesExtra, Img2ImgMatchesDiffusersPipeline) {
  WeightStore ref = test::load_ref("schedulers/ref_sampler_extra.safetensors");
  const Shape shape = {1, 4, 4, 4};
  int cases = 0;
  double worst = 0;
  for (int k = 0;; k++) {
    const std::string p = "i" + std::to_string(k);
    if (!ref.metadata.count(p)) break;
    ExtraCase c = extra_case(ref, p);
    const std::string what = p + " " + ref.metadata.at(p);
    auto s = make_scheduler(c.sampler, c.schedule, c.cfg);
    s->set_timesteps(c.steps);
    const size_t start = img2img_start_index(*s, c.steps, c.strength);
    EXPECT_EQ((float)start, ref.get(p + ".start", {1}).f32()[0]) << what;
    auto rng = make_rng("torch-cpu", 99);
    Tensor init = rng->randn(shape), noise = rng->randn(shape);
    Tensor x = s->add_noise(init, noise, start);
    EXPECT_TRUE(test::allclose(x, ref.get(p + ".noised", shape), 1e-6f, 1e-6f)) << what;
    for (size_t i = start; i < s->timesteps().size(); i++)
      x = s->step(fake_model(s->scale_model_input(x, i), s->timesteps()[i]), i, x, *rng);
    const Tensor& want = ref.get(p + ".final", shape);
    EXPECT_TRUE(test::allclose(x, want, 1e-5f, 1e-5f)) << what;
    for (int64_t e = 0; e < x.numel(); e++)
      worst = std::max(worst, (double)std::fabs(x.f32()[e] - want.f32()[e]) / (1.0 + std::fabs(want.f32()[e])));
    cases++;
  }
  EXPECT_EQ(cases, 39);
  std::printf("img2img: %d cases, max err %.3g\n", cases, worst);
}

// ---------------------------------------------------------------------------------------------
// k-diffusion samplers (A1111), against k-diffusion's own code (tools/gen_kdiff_ref.py).

TEST(KDiffusion, SigmasTimestepsAndLoopsMatchKDiffusion) {
  WeightStore ref = test::load_ref("schedulers/ref_kdiff.safetensors");
  const Shape shape = {1, 4, 4, 4};
  int cases = 0;
  double worst_sched = 0, worst_loop = 0;
  for (int k = 0;; k++) {
    const std::string p = "k" + std::to_string(k);
    if (!ref.metadata.count(p)) break;
    json j = parse_meta(ref.metadata.at(p));
    const std::string what = p + " " + ref.metadata.at(p);
    SchedulerConfig cfg;
    cfg.beta_schedule = j["beta_schedule"];
    cfg.beta_start = j["beta_start"];
    cfg.beta_end = j["beta_end"];
    cfg.prediction_type = j["prediction_type"];
    auto s = make_scheduler(j["sampler"], j["schedule"], cfg);
    const int n = j["steps"];
    s->set_timesteps(n);
    const Tensor& sg = ref.get(p + ".sigmas", {n + 1});
    const Tensor& ts = ref.get(p + ".timesteps", {n});
    // Heun evaluates twice per step: tables hold [s0, s1, s1, s2, s2, ...]; compare the distinct ones.
    const bool heun = j["sampler"] == "k_heun";
    std::vector<float> sig = s->sigmas(), tim = s->timesteps();
    if (heun) {
      sig.clear(), tim.clear();
      for (size_t e = 0; e < s->sigmas().size(); e += (e == 0 ? 1 : 2)) sig.push_back(s->sigmas()[e]);
      for (size_t e = 0; e < s->timesteps().size(); e += (e == 0 ? 1 : 2)) tim.push_back(s->timesteps()[e]);
      EXPECT_EQ(s->timesteps().size(), (size_t)(2 * n - 1)) << what;
    }
    // float32 torch maths (log/exp/pow through torch's vectorised libm): ~1e-6 relative.
    EXPECT_TRUE(test::allclose(vec_tensor(sig), sg, 1e-6f, 2e-6f)) << what;
    EXPECT_TRUE(test::allclose(vec_tensor(tim), ts, 1e-3f, 2e-6f)) << what;
    worst_sched = std::max({worst_sched, max_rel(sig, sg), max_rel(tim, ts)});
    auto rng = make_rng("torch-cpu", 99);
    Tensor x = rng->randn(shape);
    for (int64_t e = 0; e < x.numel(); e++) x.f32()[e] *= s->init_noise_sigma();
    int done = 0;
    for (size_t i = 0; i < s->timesteps().size(); i++) {
      Tensor eps = fake_model(s->scale_model_input(x, i), s->timesteps()[i]);
      x = s->step(eps, i, x, *rng);
      if (heun && i % 2 == 0 && i + 1 != s->timesteps().size()) continue;  // Heun predictor
      const Tensor& want = ref.get(p + ".step_" + std::to_string(done++), shape);
      EXPECT_TRUE(test::allclose(x, want, 1e-5f, 1e-5f)) << what << " step " << i;
      for (int64_t e = 0; e < x.numel(); e++)
        worst_loop = std::max(worst_loop, (double)std::fabs(x.f32()[e] - want.f32()[e]) / (1.0 + std::fabs(want.f32()[e])));
    }
    EXPECT_EQ(done, n) << what;
    cases++;
  }
  EXPECT_EQ(cases, 120);
  std::printf("k-diffusion: %d cases, schedule max rel err %.3g, loop max err %.3g\n", cases, worst_sched, worst_loop);
}

TEST(KDiffusion, Img2ImgAsA1111) {
  WeightStore ref = test::load_ref("schedulers/ref_kdiff.safetensors");
  const Shape shape = {1, 4, 4, 4};
  int cases = 0;
  double worst = 0;
  for (int k = 0;; k++) {
    const std::string p = "j" + std::to_string(k);
    if (!ref.metadata.count(p)) break;
    json j = parse_meta(ref.metadata.at(p));
    const std::string what = p + " " + ref.metadata.at(p);
    SchedulerConfig cfg;
    auto s = make_scheduler(j["sampler"], j["schedule"], cfg);
    const int steps = j["steps"];
    s->set_timesteps(steps);
    const size_t start = img2img_start_index(*s, steps, j["strength"].get<double>());
    const float ref_start = ref.get(p + ".start", {1}).f32()[0];  // index into the sigma list
    EXPECT_EQ((float)start, j["sampler"] == "k_heun" ? 2 * ref_start : ref_start) << what;
    auto rng = make_rng("torch-cpu", 99);
    Tensor init = rng->randn(shape), noise = rng->randn(shape);
    Tensor x = s->add_noise(init, noise, start);
    EXPECT_TRUE(test::allclose(x, ref.get(p + ".noised", shape), 1e-6f, 1e-6f)) << what;
    for (size_t i = start; i < s->timesteps().size(); i++)
      x = s->step(fake_model(s->scale_model_input(x, i), s->timesteps()[i]), i, x, *rng);
    const Tensor& want = ref.get(p + ".final", shape);
    EXPECT_TRUE(test::allclose(x, want, 1e-5f, 1e-5f)) << what;
    for (int64_t e = 0; e < x.numel(); e++)
      worst = std::max(worst, (double)std::fabs(x.f32()[e] - want.f32()[e]) / (1.0 + std::fabs(want.f32()[e])));
    cases++;
  }
  EXPECT_EQ(cases, 30);
  std::printf("k-diffusion img2img: %d cases, max err %.3g\n", cases, worst);
}
