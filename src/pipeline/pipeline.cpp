#include "pipeline/pipeline.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "models/clip.h"
#include "models/conditioner.h"
#include "models/tokenizer.h"
#include "models/unet.h"
#include "models/vae.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "sampling/rng.h"
#include "sampling/schedulers.h"

namespace easel {

namespace {
// EASEL_VERBOSE=1 prints each phase's wall time to stderr (for profiling whole runs).
struct PhaseTimer {
  bool on = std::getenv("EASEL_VERBOSE") != nullptr;
  std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
  void mark(const char* what) {
    if (!on) return;
    auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr, "[easel] %s: %.2f s\n", what, std::chrono::duration<double>(now - t).count());
    t = now;
  }
};
}  // namespace

struct Pipeline::Impl {
  Checkpoint ckpt;
  std::unique_ptr<Tokenizer> own_tokenizer;  // a diffusers folder's tokenizer/
  const Tokenizer* tokenizer = nullptr;      // else the shipped CLIP vocab
  CLIPTextModel text;
  UNet2DConditionModel unet;
  AutoencoderKL vae;
};

Pipeline::Pipeline() : impl_(std::make_unique<Impl>()) {}
Pipeline::~Pipeline() = default;
const ModelConfig& Pipeline::config() const { return impl_->ckpt.config; }
const std::string& Pipeline::path() const { return impl_->ckpt.path; }

std::unique_ptr<Pipeline> Pipeline::load(const std::string& path, const CheckpointOverrides& ov) {
  std::unique_ptr<Pipeline> p(new Pipeline());
  Impl& m = *p->impl_;
  m.ckpt = open_checkpoint(path, ov);
  const ModelConfig& cfg = m.ckpt.config;
  if (m.ckpt.tokenizer_dir.empty()) {
    m.tokenizer = &Tokenizer::clip();
  } else {
    m.own_tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_folder(m.ckpt.tokenizer_dir));
    m.tokenizer = m.own_tokenizer.get();
  }
  m.text.load(m.ckpt.text_encoder, cfg.text);
  m.unet.load(m.ckpt.unet, cfg.unet);
  m.vae.load(m.ckpt.vae, cfg.vae);
  return p;
}

void Pipeline::validate(const GenerateOptions& o) const {
  const ModelConfig& cfg = impl_->ckpt.config;
  // The UNet halves the latent (levels-1) times; with the VAE's 8x that is 64 px for SD.
  int64_t mult = cfg.vae.downscale();
  if (o.width <= 0 || o.height <= 0 || o.width % mult || o.height % mult)
    fail("generate", "size " + std::to_string(o.width) + "x" + std::to_string(o.height) +
                         " is not a positive multiple of " + std::to_string(mult));
  if (o.width > 8192 || o.height > 8192)
    fail("generate", "size " + std::to_string(o.width) + "x" + std::to_string(o.height) + " is larger than 8192");
  int max_steps = cfg.scheduler.num_train_timesteps;
  if (o.steps < 1 || o.steps > max_steps)
    fail("generate", "steps must be between 1 and " + std::to_string(max_steps) + ", got " + std::to_string(o.steps));
  if (!std::isfinite(o.cfg_scale) || o.cfg_scale < 0 || o.cfg_scale > 100)
    fail("generate", "cfg scale must be in [0, 100]");
  if (o.init_image) {
    if (!(o.strength > 0 && o.strength <= 1))
      fail("generate", "strength must be in (0, 1], got " + std::to_string(o.strength));
  }
  make_scheduler(o.sampler, o.scheduler, cfg.scheduler);  // throws on an unknown sampler/schedule
  if (o.rng != "torch-cpu" && o.rng != "philox")
    fail("generate", "unknown rng '" + o.rng + "' (torch-cpu, philox)");
}

// Classifier-free guidance, in diffusers' order of operations: u + s * (c - u).
static Tensor guide(const Tensor& u, const Tensor& c, float s) {
  Tensor y = Tensor::empty(u.shape());
  const float* pu = u.f32();
  const float* pc = c.f32();
  float* r = y.f32();
  for (int64_t i = 0; i < y.numel(); i++) r[i] = pu[i] + s * (pc[i] - pu[i]);
  return y;
}

GenerateResult Pipeline::generate(const GenerateOptions& o) const {
  validate(o);
  PhaseTimer timer;
  const Impl& m = *impl_;
  const ModelConfig& cfg = m.ckpt.config;
  int clip_skip = o.clip_skip > 0 ? o.clip_skip : 1;
  bool cfg_on = o.cfg_scale > 1.0f;  // diffusers: do_classifier_free_guidance = guidance_scale > 1

  // Conditioning: [1, 77k, C] each; diffusers' batch order is [uncond, cond].
  Tensor context;
  {
    PromptOptions po;
    po.clip_skip = clip_skip;
    po.pad_id = cfg.pad_token_id;
    if (cfg_on) {
      Conditioning c = encode_prompt_pair(m.text, *m.tokenizer, o.prompt, o.negative_prompt, po);
      context = ops::concat({c.uncond, c.cond}, 0);
    } else {
      context = encode_prompt(m.text, *m.tokenizer, o.prompt, po);
    }
  }

  timer.mark("text encode");
  if (o.low_memory) release_mapped_pages();
  auto rng = make_rng(o.rng, o.seed);
  auto sched = make_scheduler(o.sampler, o.scheduler, cfg.scheduler);
  sched->set_timesteps(o.steps);
  int64_t f = cfg.vae.downscale();
  Shape lshape = {1, cfg.unet.in_channels, o.height / f, o.width / f};

  size_t start = 0;
  Tensor latents;
  if (o.init_image) {
    // img2img (StableDiffusionImg2ImgPipeline.prepare_latents): sample the VAE posterior
    // with the generator, scale, then add noise at the first kept timestep.
    Image img = o.init_image->width == o.width && o.init_image->height == o.height
                    ? *o.init_image
                    : resize_image(*o.init_image, o.width, o.height);
    Tensor x = image_to_tensor(img);  // [1, 3, H, W] in [-1, 1]
    Tensor moments = m.vae.encode_moments(x);  // [1, 2*4, h, w]
    int64_t c = moments.size(1) / 2, hw = moments.size(2) * moments.size(3);
    Tensor eps = rng->randn({1, c, moments.size(2), moments.size(3)});
    Tensor z = Tensor::empty(eps.shape());
    for (int64_t i = 0; i < c * hw; i++) {
      float mean = moments.f32()[i];
      float logvar = std::clamp(moments.f32()[c * hw + i], -30.0f, 20.0f);
      z.f32()[i] = (mean + std::exp(0.5f * logvar) * eps.f32()[i]) * cfg.vae.scaling_factor;
    }
    start = img2img_start_index(*sched, o.steps, o.strength);
    if (start >= sched->timesteps().size())
      fail("generate", "strength " + std::to_string(o.strength) + " leaves no denoising steps");
    Tensor noise = rng->randn(z.shape());
    latents = sched->add_noise(z, noise, start);
  } else {
    latents = ops::scale(rng->randn(lshape), sched->init_noise_sigma());
  }

  const auto& ts = sched->timesteps();
  int total = (int)(ts.size() - start);
  for (size_t i = start; i < ts.size(); i++) {
    Tensor model_in = sched->scale_model_input(latents, i);
    Tensor batch = cfg_on ? ops::concat({model_in, model_in}, 0) : model_in;
    std::vector<float> t(batch.size(0), ts[i]);
    Tensor out = m.unet.forward(batch, t, context);  // [B, 4, h, w]
    Tensor pred;
    if (cfg_on) {
      Tensor u = out.slice0(0, 1), c = out.slice0(1, 1);
      pred = guide(u, c, o.cfg_scale);
    } else {
      pred = out;
    }
    latents = sched->step(pred, i, latents, *rng);
    if (o.on_latents) o.on_latents((int)(i - start + 1), latents);
    timer.mark("sampling step");
    if (o.on_step && !o.on_step((int)(i - start + 1), total)) fail("generate", "cancelled");
  }

  if (o.low_memory) {
    ops::clear_weight_cache();
    release_mapped_pages();
  }
  GenerateResult r;
  r.latents = latents;
  // Winograd (--winograd) speeds up the UNet's 3x3 convs but slows the VAE's full-resolution ones
  // and multiplies their workspace, so the decoder always runs direct convolutions.
  const bool wino = ops::winograd();
  ops::set_winograd(false);
  Tensor dec = m.vae.decode(ops::scale(latents, 1.0f / cfg.vae.scaling_factor));  // [1, 3, H, W] in ~[-1, 1]
  ops::set_winograd(wino);
  timer.mark("VAE decode");
  Tensor img01 = Tensor::empty(dec.shape());
  for (int64_t i = 0; i < dec.numel(); i++) img01.f32()[i] = std::clamp(dec.f32()[i] * 0.5f + 0.5f, 0.0f, 1.0f);
  r.decoded = img01;
  r.image = tensor01_to_image(img01);
  return r;
}

}  // namespace easel
