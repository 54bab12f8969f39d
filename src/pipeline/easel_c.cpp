#include "pipeline/easel_c.h"

#include <cstring>
#include <string>

#include "lora/lora_apply.h"
#include "pipeline/pipeline.h"

struct easel_pipeline {
  std::unique_ptr<easel::Pipeline> p;
  const easel::Pipeline* refiner = nullptr;
  float refiner_start = 0.8f;
  std::vector<easel::ControlUnit> control;  // easel_add_controlnet
};

static thread_local std::string g_error;

template <class F>
static int guarded(F f) {
  try {
    f();
    g_error.clear();
    return 0;
  } catch (const std::exception& e) {
    g_error = e.what();
  } catch (...) {
    g_error = "unknown error";
  }
  return 1;
}

extern "C" {

void easel_default_params(easel_generate_params* p) {
  std::memset(p, 0, sizeof(*p));
  p->steps = 20;
  p->cfg_scale = 7.0f;
  p->seed = 42;
  p->width = p->height = 512;
  p->strength = 0.75f;
}

int easel_load(const char* path, easel_pipeline** out) {
  return guarded([&] {
    if (!path || !out) easel::fail("c_api", "easel_load: null argument");
    *out = nullptr;
    auto h = new easel_pipeline{easel::Pipeline::load(path)};
    *out = h;
  });
}

int easel_generate(easel_pipeline* p, const easel_generate_params* q, uint8_t* rgb_out) {
  return guarded([&] {
    if (!p || !q || !rgb_out || !q->prompt) easel::fail("c_api", "easel_generate: null argument");
    easel::GenerateOptions o;
    o.prompt = q->prompt;
    if (q->negative_prompt) o.negative_prompt = q->negative_prompt;
    o.steps = q->steps;
    o.cfg_scale = q->cfg_scale;
    o.seed = q->seed;
    if (q->sampler) o.sampler = q->sampler;
    if (q->scheduler) o.scheduler = q->scheduler;
    if (q->rng) o.rng = q->rng;
    o.width = q->width;
    o.height = q->height;
    o.clip_skip = q->clip_skip;
    if (q->init_rgb) {
      easel::Image img;
      img.width = q->width;
      img.height = q->height;
      img.channels = 3;
      img.pixels.assign(q->init_rgb, q->init_rgb + (size_t)q->width * q->height * 3);
      o.init_image = img;
      o.strength = q->strength;
    }
    o.vae_tiling = q->vae_tiling != 0;
    o.refiner = p->refiner;
    o.refiner_start = p->refiner_start;
    o.control = p->control;
    auto r = p->p->generate(o);
    std::memcpy(rgb_out, r.image.pixels.data(), r.image.pixels.size());
  });
}

int easel_set_refiner(easel_pipeline* base, easel_pipeline* refiner, float start) {
  return guarded([&] {
    if (!base) easel::fail("c_api", "easel_set_refiner: null base");
    if (refiner && !(start > 0 && start < 1)) easel::fail("c_api", "easel_set_refiner: start must be in (0, 1)");
    base->refiner = refiner ? refiner->p.get() : nullptr;
    base->refiner_start = start;
  });
}

int easel_add_controlnet(easel_pipeline* p, const char* model, const uint8_t* guide_rgb, int guide_w, int guide_h,
                         float strength, float start, float end, int control_mode, int resize_mode) {
  return guarded([&] {
    if (!p || !model || !guide_rgb) easel::fail("c_api", "easel_add_controlnet: null argument");
    if (guide_w <= 0 || guide_h <= 0 || guide_w > easel::kMaxImageSide || guide_h > easel::kMaxImageSide)
      easel::fail("c_api", "easel_add_controlnet: invalid guide size");
    if (control_mode < 0 || control_mode > 2 || resize_mode < 0 || resize_mode > 2)
      easel::fail("c_api", "easel_add_controlnet: control_mode and resize_mode must be 0, 1 or 2");
    easel::ControlUnit u;
    u.name = model;
    u.guide.width = guide_w, u.guide.height = guide_h, u.guide.channels = 3;
    u.guide.pixels.assign(guide_rgb, guide_rgb + (size_t)guide_w * guide_h * 3);
    u.strength = strength, u.start = start, u.end = end;
    u.control_mode = easel::parse_control_mode(std::to_string(control_mode));
    u.resize_mode = easel::parse_resize_mode(std::to_string(resize_mode));
    u.controlnet = std::make_shared<easel::ControlNetModel>(easel::load_controlnet(model, &p->p->config()));
    easel::validate_unit(u, p->p->config());
    p->control.push_back(std::move(u));
  });
}

int easel_clear_controlnets(easel_pipeline* p) {
  return guarded([&] {
    if (!p) easel::fail("c_api", "easel_clear_controlnets: null argument");
    p->control.clear();
  });
}

int easel_set_loras(easel_pipeline* p, const char* const* files, const float* unet_strengths,
                    const float* te_strengths, int n, int mode) {
  return guarded([&] {
    if (!p || n < 0 || (n > 0 && (!files || !unet_strengths))) easel::fail("c_api", "easel_set_loras: null argument");
    if (mode < 0 || mode > 2) easel::fail("c_api", "easel_set_loras: mode must be 0 (auto), 1 (merge) or 2 (bypass)");
    std::vector<easel::lora::LoraSpec> specs;
    for (int i = 0; i < n; i++) {
      if (!files[i]) easel::fail("c_api", "easel_set_loras: null file name");
      easel::lora::LoraSpec s;
      s.file = easel::lora::read_lora(files[i], p->p->checkpoint());
      s.unet_strength = unet_strengths[i];
      s.te_strength = te_strengths ? te_strengths[i] : unet_strengths[i];
      specs.push_back(std::move(s));
    }
    using M = easel::Pipeline::LoraApply;
    p->p->set_loras(specs, mode == 1 ? M::Merge : mode == 2 ? M::Bypass : M::Auto);
  });
}

void easel_free(easel_pipeline* p) { delete p; }

const char* easel_last_error(void) { return g_error.c_str(); }
}
