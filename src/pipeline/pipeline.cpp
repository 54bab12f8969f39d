#include "pipeline/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "io/safetensors.h"
#include "lora/lora_apply.h"
#include "lora/lora_bypass.h"
#include "models/clip.h"
#include "models/conditioner.h"
#include "models/conditioner_sdxl.h"
#include "models/tokenizer.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/vae_tiling.h"
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

// Classifier-free guidance, in diffusers' order of operations: u + s * (c - u).
Tensor guide(const Tensor& u, const Tensor& c, float s) {
  Tensor y = Tensor::empty(u.shape());
  const float* pu = u.f32();
  const float* pc = c.f32();
  float* r = y.f32();
  for (int64_t i = 0; i < y.numel(); i++) r[i] = pu[i] + s * (pc[i] - pu[i]);
  return y;
}

// [rows.size(), n] f32 from per-row values.
Tensor rows_tensor(const std::vector<std::vector<float>>& rows) {
  Tensor t = Tensor::empty({(int64_t)rows.size(), (int64_t)rows[0].size()});
  for (size_t r = 0; r < rows.size(); r++)
    for (size_t i = 0; i < rows[r].size(); i++) t.f32()[r * rows[0].size() + i] = rows[r][i];
  return t;
}

// diffusers' denoising_end/denoising_start cutoff: int(round(T - frac * T)) (Python rounds half to even).
int timestep_cutoff(const SchedulerConfig& s, double frac) {
  return (int)std::nearbyint(s.num_train_timesteps - frac * s.num_train_timesteps);
}
}  // namespace

struct Pipeline::Impl {
  Checkpoint ckpt;
  std::unique_ptr<Tokenizer> own_tok1, own_tok2;  // a diffusers folder's tokenizer/, tokenizer_2/
  const Tokenizer* tok1 = nullptr;                // else the shipped CLIP vocab
  const Tokenizer* tok2 = nullptr;
  CLIPTextModel text;    // SD1/SD2 text encoder; SDXL CLIP-L (absent in the refiner)
  CLIPTextModel text_2;  // SDXL OpenCLIP bigG
  UNet2DConditionModel unet;
  AutoencoderKL vae;
  lora::Merger merger;      // set_loras(), merge mode
  lora::Bypasser bypasser;  // set_loras(), bypass mode
  Pipeline::LoraApply lora_mode = Pipeline::LoraApply::Auto;
  std::vector<lora::LoraSpec> loras;  // as set
  void load_text_unet();  // (re)loads the text encoders and the UNet from ckpt's stores

  // UNet conditioning for one model: the batch is [uncond, cond] with guidance, else [cond].
  struct Cond {
    Tensor context;      // [B, 77k, C]
    Tensor text_embeds;  // SDXL pooled [B, P]
    Tensor time_ids;     // SDXL [B, 6] (base) or [B, 5] (refiner)
  };
  Cond encode(const GenerateOptions& o, bool cfg_on, int W, int H) const;
  // Runs step indices [begin, end) of `s` from `latents`; `done` counts steps for on_step.
  Tensor denoise(Tensor latents, Scheduler& s, size_t begin, size_t end, const Cond& c, const GenerateOptions& o,
                 bool cfg_on, Rng& rng, int& done, int total, PhaseTimer& timer,
                 ControlRunner* control = nullptr) const;
  Tensor encode_image(const Tensor& x, bool tiled) const;  // [1, 3, H, W] -> moments [1, 8, h, w]
  Tensor decode_latents(const Tensor& latents, bool tiled) const;  // [1, 4, h, w] -> [1, 3, H, W] in [0, 1]
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
  auto tokenizer = [](const std::string& dir, std::unique_ptr<Tokenizer>& own) -> const Tokenizer* {
    if (dir.empty()) return &Tokenizer::clip();
    own = std::make_unique<Tokenizer>(Tokenizer::from_folder(dir));
    return own.get();
  };
  if (cfg.has_text_1()) m.tok1 = tokenizer(m.ckpt.tokenizer_dir, m.own_tok1);
  if (cfg.is_sdxl()) m.tok2 = tokenizer(m.ckpt.tokenizer_2_dir, m.own_tok2);
  m.load_text_unet();
  m.vae.load(m.ckpt.vae, cfg.vae);
  return p;
}

void Pipeline::Impl::load_text_unet() {
  const ModelConfig& cfg = ckpt.config;
  if (cfg.has_text_1()) {
    text = CLIPTextModel();
    text.load(ckpt.text_encoder, cfg.text);
  }
  if (cfg.is_sdxl()) {
    text_2 = CLIPTextModel();
    text_2.load(ckpt.text_encoder_2, cfg.text_2);
  }
  unet = UNet2DConditionModel();
  unet.load(ckpt.unet, cfg.unet);
}

const Checkpoint& Pipeline::checkpoint() const { return impl_->ckpt; }

void Pipeline::set_loras(const std::vector<lora::LoraSpec>& loras, LoraApply mode) {
  Impl& m = *impl_;
  if (mode == LoraApply::Auto) {  // bytes of the f32 copies merging would make
    size_t bytes = 0;
    std::set<std::pair<int, std::string>> seen;
    for (const auto& spec : loras)
      for (const auto& mod : spec.file.modules)
        if (seen.insert({(int)mod.target, mod.module}).second) bytes += (size_t)shape_numel(mod.shape) * 4;
    mode = bytes <= kLoraMergeAutoBytes ? LoraApply::Merge : LoraApply::Bypass;
  }
  if (loras.empty()) mode = LoraApply::Auto;
  if (mode == LoraApply::Bypass) {
    if (m.merger.merged()) {  // the bypass is keyed by the original weights: unmerge first
      m.merger.unmerge(m.ckpt);
      m.load_text_unet();
      try {
        m.bypasser.apply(m.ckpt, loras);
      } catch (...) {  // back to the merged state (it merged before, so it merges again)
        m.merger.merge(m.ckpt, m.loras);
        m.load_text_unet();
        throw;
      }
    } else {
      m.bypasser.apply(m.ckpt, loras);  // throws before changing anything
    }
  } else {
    m.merger.merge(m.ckpt, loras);  // throws before changing anything
    m.bypasser.remove();
    try {
      m.load_text_unet();
    } catch (...) {
      m.merger.unmerge(m.ckpt);
      m.load_text_unet();
      throw;
    }
  }
  m.lora_mode = mode;
  m.loras = loras;
}

Pipeline::LoraApply Pipeline::lora_mode() const { return impl_->lora_mode; }

int Pipeline::width_for(const GenerateOptions& o) const {
  const ModelConfig& c = impl_->ckpt.config;
  return o.width ? o.width : c.unet.sample_size * c.vae.downscale();
}
int Pipeline::height_for(const GenerateOptions& o) const {
  const ModelConfig& c = impl_->ckpt.config;
  return o.height ? o.height : c.unet.sample_size * c.vae.downscale();
}

void Pipeline::validate(const GenerateOptions& o) const {
  const ModelConfig& cfg = impl_->ckpt.config;
  const int W = width_for(o), H = height_for(o);
  // The UNet halves the latent (levels-1) times; with the VAE's 8x that is 64 px for SD.
  int64_t mult = cfg.vae.downscale();
  if (W <= 0 || H <= 0 || W % mult || H % mult)
    fail("generate", "size " + std::to_string(W) + "x" + std::to_string(H) + " is not a positive multiple of " +
                         std::to_string(mult));
  if (W > 8192 || H > 8192)
    fail("generate", "size " + std::to_string(W) + "x" + std::to_string(H) + " is larger than 8192");
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
  for (int v : {o.original_width, o.original_height, o.target_width, o.target_height, o.crop_left, o.crop_top})
    if (v < 0 || v > 65536) fail("generate", "SDXL size/crop conditioning must be in [0, 65536]");
  if (!std::isfinite(o.aesthetic_score) || !std::isfinite(o.negative_aesthetic_score))
    fail("generate", "aesthetic scores must be finite");
  for (const ControlUnit& u : o.control) validate_unit(u, cfg);
  if (!o.control.empty() && o.refiner)
    fail("generate", "ControlNet/adapter units with a refiner are not supported (the refiner's UNet differs)");
  if (o.refiner) {
    const ModelConfig& rc = o.refiner->config();
    if (!cfg.is_sdxl())
      fail("generate", "a refiner needs an SDXL base model; " + path() + " is " + cfg.family);
    if (!rc.is_sdxl())
      fail("generate", o.refiner->path() + ": not an SDXL model (it is " + rc.family + "), cannot be the refiner");
    if (rc.vae.latent_channels != cfg.vae.latent_channels || rc.vae.downscale() != cfg.vae.downscale())
      fail("generate", o.refiner->path() + ": its latent space differs from the base model's");
    if (!(o.refiner_start > 0 && o.refiner_start < 1))
      fail("generate", "refiner start must be in (0, 1), got " + std::to_string(o.refiner_start));
    make_scheduler(o.sampler, o.scheduler, rc.scheduler);
  }
}

Pipeline::Impl::Cond Pipeline::Impl::encode(const GenerateOptions& o, bool cfg_on, int W, int H) const {
  const ModelConfig& cfg = ckpt.config;
  int clip_skip = o.clip_skip > 0 ? o.clip_skip : 1;
  Cond c;
  PromptOptions po;
  po.clip_skip = clip_skip;
  po.pad_id = cfg.pad_token_id;
  if (!cfg.is_sdxl()) {
    if (cfg_on) {
      Conditioning t = encode_prompt_pair(text, *tok1, o.prompt, o.negative_prompt, po);
      c.context = ops::concat({t.uncond, t.cond}, 0);  // diffusers' batch order
    } else {
      c.context = encode_prompt(text, *tok1, o.prompt, po);
    }
    return c;
  }
  SDXLTextEncoders enc;
  if (cfg.has_text_1()) enc.te1 = &text, enc.tok1 = tok1;
  enc.te2 = &text_2, enc.tok2 = tok2;
  enc.pad_id_1 = cfg.pad_token_id;
  enc.pad_id_2 = cfg.pad_token_id_2;
  // diffusers' _get_add_time_ids: (original_size, crops_coords_top_left, target_size) for the base,
  // (original_size, crops_coords_top_left, aesthetic_score) for the refiner; sizes are (h, w).
  const int oh = o.original_height ? o.original_height : H, ow = o.original_width ? o.original_width : W;
  const int th = o.target_height ? o.target_height : H, tw = o.target_width ? o.target_width : W;
  std::vector<float> ids, neg_ids;
  if (cfg.requires_aesthetics_score) {
    ids = sdxl_refiner_time_ids(oh, ow, o.crop_top, o.crop_left, o.aesthetic_score);
    neg_ids = sdxl_refiner_time_ids(oh, ow, o.crop_top, o.crop_left, o.negative_aesthetic_score);
  } else {
    ids = neg_ids = sdxl_time_ids(oh, ow, o.crop_top, o.crop_left, th, tw);
  }
  if (ids.size() * cfg.unet.addition_time_embed_dim + cfg.text_2.projection_dim !=
      (size_t)cfg.unet.projection_class_embeddings_input_dim)
    fail("generate", ckpt.path + ": the UNet's added conditioning expects " +
                         std::to_string(cfg.unet.projection_class_embeddings_input_dim) + " inputs, not " +
                         std::to_string(ids.size()) + " time ids of " +
                         std::to_string(cfg.unet.addition_time_embed_dim) + " + a pooled " +
                         std::to_string(cfg.text_2.projection_dim) +
                         (cfg.requires_aesthetics_score ? " (refiner-style aesthetic score)" : " (base-style sizes)"));
  if (cfg_on) {
    // An empty negative prompt means "none" (diffusers' negative_prompt=None): zeros for the base.
    SDXLConditioningPair p =
        encode_prompt_pair_sdxl(enc, o.prompt, o.negative_prompt, po, cfg.force_zeros_for_empty_prompt);
    c.context = ops::concat({p.uncond.context, p.cond.context}, 0);
    c.text_embeds = ops::concat({p.uncond.pooled, p.cond.pooled}, 0);
    c.time_ids = rows_tensor({neg_ids, ids});
  } else {
    SDXLConditioning t = encode_prompt_sdxl(enc, o.prompt, po);
    c.context = t.context;
    c.text_embeds = t.pooled;
    c.time_ids = rows_tensor({ids});
  }
  return c;
}

Tensor Pipeline::Impl::denoise(Tensor latents, Scheduler& s, size_t begin, size_t end, const Cond& c,
                               const GenerateOptions& o, bool cfg_on, Rng& rng, int& done, int total,
                               PhaseTimer& timer, ControlRunner* control) const {
  const auto& ts = s.timesteps();
  UNetExtras ex;
  if (c.text_embeds.defined()) ex.text_embeds = &c.text_embeds, ex.time_ids = &c.time_ids;
  for (size_t i = begin; i < end; i++) {
    Tensor model_in = s.scale_model_input(latents, i);
    Tensor batch = cfg_on ? ops::concat({model_in, model_in}, 0) : model_in;
    std::vector<float> t(batch.size(0), ts[i]);
    if (control) {  // ControlNet residuals / adapter features for this step (diffusers' controlnet_keep window)
      control->step(i - begin, end - begin, model_in, ts[i], c.context, ex.text_embeds, ex.time_ids, ex);
      timer.mark("control");
    }
    Tensor out = unet.forward(batch, t, c.context, &ex);  // [B, 4, h, w]
    Tensor pred = cfg_on ? guide(out.slice0(0, 1), out.slice0(1, 1), o.cfg_scale) : out;
    latents = s.step(pred, i, latents, rng);
    ++done;
    if (o.on_latents) o.on_latents(done, latents);
    timer.mark("sampling step");
    if (o.on_step && !o.on_step(done, total)) fail("generate", "cancelled");
  }
  return latents;
}

Tensor Pipeline::Impl::encode_image(const Tensor& x, bool tiled) const {
  return tiled ? vae_encode_moments_tiled(vae, x, VAETiling{}) : vae.encode_moments(x);
}

Tensor Pipeline::Impl::decode_latents(const Tensor& latents, bool tiled) const {
  // Winograd (--winograd) speeds up the UNet's 3x3 convs but slows the VAE's full-resolution ones
  // and multiplies their workspace, so the decoder always runs direct convolutions.
  const bool wino = ops::winograd();
  ops::set_winograd(false);
  Tensor z = ops::scale(latents, 1.0f / ckpt.config.vae.scaling_factor);
  Tensor dec = tiled ? vae_decode_tiled(vae, z, VAETiling{}) : vae.decode(z);  // [1, 3, H, W] in ~[-1, 1]
  ops::set_winograd(wino);
  Tensor img01 = Tensor::empty(dec.shape());
  for (int64_t i = 0; i < dec.numel(); i++) img01.f32()[i] = std::clamp(dec.f32()[i] * 0.5f + 0.5f, 0.0f, 1.0f);
  return img01;
}

GenerateResult Pipeline::generate(const GenerateOptions& o) const {
  validate(o);
  PhaseTimer timer;
  const Impl& m = *impl_;
  const ModelConfig& cfg = m.ckpt.config;
  const int W = width_for(o), H = height_for(o);
  const bool cfg_on = o.cfg_scale > 1.0f;  // diffusers: do_classifier_free_guidance = guidance_scale > 1

  Impl::Cond cond = m.encode(o, cfg_on, W, H);
  timer.mark("text encode");
  if (o.low_memory) release_mapped_pages();
  auto rng = make_rng(o.rng, o.seed);
  auto sched = make_scheduler(o.sampler, o.scheduler, cfg.scheduler);
  sched->set_timesteps(o.steps);
  const auto& ts = sched->timesteps();
  int64_t f = cfg.vae.downscale();

  size_t start = 0;
  Tensor latents;
  if (o.init_image) {
    // img2img (StableDiffusion(XL)Img2ImgPipeline.prepare_latents): sample the VAE posterior
    // with the generator, scale, then add noise at the first kept timestep.
    Image img = o.init_image->width == W && o.init_image->height == H ? *o.init_image : resize_image(*o.init_image, W, H);
    Tensor moments = m.encode_image(image_to_tensor(img), o.vae_tiling);  // [1, 2*4, h, w]
    int64_t c = moments.size(1) / 2, hw = moments.size(2) * moments.size(3);
    Tensor eps = rng->randn({1, c, moments.size(2), moments.size(3)});
    Tensor z = Tensor::empty(eps.shape());
    for (int64_t i = 0; i < c * hw; i++) {
      float mean = moments.f32()[i];
      float logvar = std::clamp(moments.f32()[c * hw + i], -30.0f, 20.0f);
      z.f32()[i] = (mean + std::exp(0.5f * logvar) * eps.f32()[i]) * cfg.vae.scaling_factor;
    }
    start = img2img_start_index(*sched, o.steps, o.strength);
    if (start >= ts.size()) fail("generate", "strength " + std::to_string(o.strength) + " leaves no denoising steps");
    Tensor noise = rng->randn(z.shape());
    latents = sched->add_noise(z, noise, start);
  } else {
    latents = ops::scale(rng->randn({1, cfg.unet.in_channels, H / f, W / f}), sched->init_noise_sigma());
  }

  // Base -> refiner split (diffusers denoising_end / denoising_start, same cutoff for both).
  size_t end = ts.size();
  std::unique_ptr<Scheduler> rsched;
  size_t rbegin = 0;
  if (o.refiner) {
    const int cut = timestep_cutoff(cfg.scheduler, o.refiner_start);
    end = 0;
    while (end < ts.size() && ts[end] >= cut) end++;  // timesteps descend: a prefix
    if (end <= start)
      fail("generate", "refiner start " + std::to_string(o.refiner_start) + " leaves the base model no steps");
    rsched = make_scheduler(o.sampler, o.scheduler, o.refiner->config().scheduler);
    rsched->set_timesteps(o.steps);
    const auto& rts = rsched->timesteps();
    size_t n = 0;
    for (float t : rts) n += t < timestep_cutoff(o.refiner->config().scheduler, o.refiner_start);
    if (rsched->order() == 2 && n % 2 == 0) n++;  // end after a second-order step's 2nd half
    n = std::min(n, rts.size());
    if (n == 0) fail("generate", "refiner start " + std::to_string(o.refiner_start) + " leaves the refiner no steps");
    rbegin = rts.size() - n;
  }
  const int total = (int)(end - start) + (rsched ? (int)(rsched->timesteps().size() - rbegin) : 0);
  int done = 0;
  std::unique_ptr<ControlRunner> control;
  if (!o.control.empty()) {
    control = std::make_unique<ControlRunner>(o.control, W, H, cfg_on, o.control_guess_mode);
    if (o.on_guides) o.on_guides(control->guides());
    timer.mark("control guides");
  }
  latents = m.denoise(latents, *sched, start, end, cond, o, cfg_on, *rng, done, total, timer, control.get());

  GenerateResult r;
  const Impl* dec = &m;
  if (o.refiner) {
    r.base_latents = latents;
    const Impl& rm = *o.refiner->impl_;
    if (o.low_memory) {
      ops::clear_weight_cache();
      release_mapped_pages();
    }
    Impl::Cond rcond = rm.encode(o, cfg_on, W, H);
    timer.mark("refiner text encode");
    latents = rm.denoise(latents, *rsched, rbegin, rsched->timesteps().size(), rcond, o, cfg_on, *rng, done, total,
                         timer);
    dec = &rm;  // diffusers decodes with the refiner pipeline's VAE
  }

  if (o.low_memory) {
    ops::clear_weight_cache();
    release_mapped_pages();
  }
  r.latents = latents;
  r.decoded = dec->decode_latents(latents, o.vae_tiling);
  timer.mark("VAE decode");
  r.image = tensor01_to_image(r.decoded);
  return r;
}

}  // namespace easel
