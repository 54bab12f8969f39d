#include "io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "io/detect.h"
#include "io/diffusers_folder.h"
#include "io/keys_ldm.h"
#include "io/keys_openclip.h"

namespace easel {
namespace fs = std::filesystem;

namespace {

const char* kWhere = "checkpoint";
const std::string kUNet = "model.diffusion_model.";
const std::string kVAE = "first_stage_model.";
const std::string kCLIP = "cond_stage_model.transformer.";
const std::string kOpenCLIP = "cond_stage_model.model.";

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// LDM keys that are not weights of any part we use: diffusion schedule buffers, EMA copies,
// training-only state, CLIP buffers. They are neither converted nor reported as unknown.
bool is_known_ignored(const std::string& k) {
  static const std::set<std::string> exact = {
      "alphas_cumprod", "alphas_cumprod_prev", "betas", "log_one_minus_alphas_cumprod",
      "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "posterior_variance",
      "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
      "sqrt_recipm1_alphas_cumprod", "logvar", "lvlb_weights", "v_pred", "global_step", "epoch",
      "cond_stage_model.transformer.text_model.embeddings.position_ids",
      "cond_stage_model.transformer.embeddings.position_ids",
      "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"};
  static const std::vector<std::string> prefixes = {"model_ema.", "first_stage_model.loss.", "edm_vpred."};
  if (exact.count(k)) return true;
  for (auto& p : prefixes)
    if (starts_with(k, p)) return true;
  return false;
}

// .ckpt files written by Lightning nest everything under "state_dict." (if the loader kept it).
WeightStore unwrap_state_dict(WeightStore all) {
  const std::string p = "state_dict.";
  if (all.tensors.empty() || !starts_with(all.tensors.begin()->first, p)) return all;
  WeightStore out;
  out.source = all.source;
  out.metadata = all.metadata;
  for (auto& [k, t] : all.tensors) out.tensors[starts_with(k, p) ? k.substr(p.size()) : k] = t;
  return out;
}

// CLIP-L keys without `prefix` ("cond_stage_model.transformer." / SDXL's
// "conditioner.embedders.0.transformer.") and without "text_model."; keys that are not
// CLIPTextModel weights go to `unknown`.
WeightStore clip_l_to_hf(const WeightStore& te, std::vector<std::string>& unknown, const std::string& prefix) {
  WeightStore out;
  out.source = te.source;
  out.metadata = te.metadata;
  const std::string p = "text_model.";
  for (auto& [k, t] : te.tensors) {
    std::string key = starts_with(k, p) ? k.substr(p.size()) : k;
    if (key == "embeddings.position_ids") continue;
    if (keys::is_clip_text_key(key)) out.tensors[key] = t;
    else unknown.push_back(prefix + k);
  }
  return out;
}

std::string normalise_prediction(const std::string& p, const std::string& path) {
  if (p == "epsilon" || p == "eps") return "epsilon";
  if (p == "v_prediction" || p == "v") return "v_prediction";
  fail(kWhere, path + ": unknown prediction type '" + p + "' (expected epsilon or v_prediction)");
}

std::string family_reason(const std::string& family, bool single_file) {
  if (family == "sdxl")
    return single_file ? "SDXL base: CLIP-L + OpenCLIP bigG text encoders (conditioner.embedders.0/1)"
                       : "SDXL base: StableDiffusionXL pipeline with text_encoder and text_encoder_2";
  if (family == "sdxl_refiner")
    return single_file ? "SDXL refiner: OpenCLIP bigG text encoder only (conditioner.embedders.0.model)"
                       : "SDXL refiner: StableDiffusionXL pipeline with text_encoder_2 only";
  if (single_file)
    return family == "sd2" ? "its text encoder is OpenCLIP (cond_stage_model.model.*)"
                           : "its text encoder is CLIP-L (cond_stage_model.transformer.*)";
  return family == "sd2" ? "its text encoder uses gelu / the UNet has 1024-dim cross-attention"
                         : "its text encoder is CLIP-L (quick_gelu)";
}

void apply_overrides(Checkpoint& ck, const CheckpointOverrides& ov, bool single_file) {
  ModelConfig& c = ck.config;
  if (!ov.family.empty()) {
    if (ov.family != "sd1" && ov.family != "sd2" && ov.family != "sdxl" && ov.family != "sdxl_refiner")
      fail(kWhere, ck.path + ": unknown family '" + ov.family + "' (expected sd1, sd2, sdxl or sdxl_refiner)");
    if (ov.family != c.family)
      fail(kWhere, ck.path + ": family override '" + ov.family + "' does not match this checkpoint, which is " +
                       c.family + " (" + family_reason(c.family, single_file) + ")");
  }
  if (!ov.prediction_type.empty()) c.scheduler.prediction_type = normalise_prediction(ov.prediction_type, ck.path);
  // clip_skip (A1111 convention) counts layers back from the last one of every encoder used:
  // SD1/SD2 text, SDXL base both encoders, the refiner text_2 only.
  int layers = c.text.num_hidden_layers;
  std::string which = "text encoder";
  if (c.family == "sdxl") {
    layers = std::min(c.text.num_hidden_layers, c.text_2.num_hidden_layers);
    which = "shallower of the two text encoders";
  } else if (c.family == "sdxl_refiner") {
    layers = c.text_2.num_hidden_layers;
    which = "text_encoder_2";
  }
  if (ov.clip_skip < 0 || ov.clip_skip > layers)
    fail(kWhere, ck.path + ": clip_skip " + std::to_string(ov.clip_skip) + " is out of range (0.." +
                     std::to_string(layers) + ": the " + which + " has " + std::to_string(layers) + " layers)");
}

// SDXL base / refiner single file (sgm layout): text encoders under conditioner.embedders.*.
void open_sdxl_text(const std::string& path, const WeightStore& all, const WeightStore& unet_ldm, Checkpoint& ck) {
  ModelConfig& c = ck.config;
  const bool base = c.family == "sdxl";
  if (base) {
    ck.text_encoder = clip_l_to_hf(all.sub(detect::kSdxlClipL), ck.unknown_keys, detect::kSdxlClipL);
    ck.text_encoder.source = path + " (" + detect::kSdxlClipL + "*)";
    c.text = detect::text_from_hf(ck.text_encoder, "sdxl");
  }
  // bigG: every layer is kept (the pooled output is the last layer's), with its projection.
  const std::string big_g = base ? detect::kSdxlBigG : detect::kSdxlRefinerBigG;
  const WeightStore oc = all.sub(big_g);
  const int n = keys::openclip_layers(oc);
  ck.text_encoder_2 = keys::openclip_to_hf(oc, n, ck.unknown_keys, big_g, /*keep_projection=*/true);
  ck.text_encoder_2.source = path + " (" + big_g + "*)";
  c.text_2 = detect::text_2_from_hf(ck.text_encoder_2);

  const int context = (base ? c.text.hidden_size : 0) + c.text_2.hidden_size;
  if (c.unet.cross_attention_dim != context)
    fail(kWhere, path + ": UNet cross-attention dim " + std::to_string(c.unet.cross_attention_dim) +
                     " does not match the text encoders' hidden sizes (" +
                     (base ? std::to_string(c.text.hidden_size) + " + " : std::string()) +
                     std::to_string(c.text_2.hidden_size) + " = " + std::to_string(context) + ")");
  detect::sdxl_added_conditioning(c.unet, unet_ldm, c.family, c.text_2.projection_dim);
  c.pad_token_id = detect::default_pad_token_id(c.family);
  c.pad_token_id_2 = 0;
  c.force_zeros_for_empty_prompt = base;
  c.requires_aesthetics_score = !base;
  c.vae.scaling_factor = 0.13025f;
  c.vae.sample_size = 1024;
  c.unet.sample_size = 128;  // 1024 px
}

Checkpoint open_single_file(const std::string& path, WeightStore all) {
  Checkpoint ck;
  ck.path = path;
  ModelConfig& c = ck.config;
  c.family = detect::family_from_ldm(all);
  const bool xl = c.is_sdxl();

  const WeightStore unet_ldm = all.sub(kUNet);
  const WeightStore vae_ldm = all.sub(kVAE);
  if (vae_ldm.tensors.empty()) fail(kWhere, path + ": no VAE weights found (first_stage_model.*)");
  c.unet = detect::unet_from_ldm(unet_ldm, c.family);
  c.vae = detect::vae_from_ldm(vae_ldm);
  if (xl) c.unet.addition_embed_type = "text_time";  // sizes: sdxl_added_conditioning, once the pooled dim is known
  ck.unet = keys::apply_table(unet_ldm, keys::ldm_unet_table(c.unet), ck.unknown_keys, kUNet);
  ck.vae = keys::apply_table(vae_ldm, keys::ldm_vae_table(c.vae), ck.unknown_keys, kVAE);

  std::vector<std::string> consumed = {kUNet, kVAE};
  if (xl) {
    open_sdxl_text(path, all, unet_ldm, ck);
    consumed.push_back(c.family == "sdxl" ? detect::kSdxlBigG : detect::kSdxlRefinerBigG);
    if (c.family == "sdxl") consumed.push_back(detect::kSdxlClipL);
  } else if (c.family == "sd2") {
    // SD2 conditions on OpenCLIP's penultimate layer: keep N-1 layers, so the text encoder's
    // last layer + final_layer_norm give that output (as diffusers' conversion does).
    const WeightStore oc = all.sub(kOpenCLIP);
    const int n = keys::openclip_layers(oc);
    if (n < 2) fail(kWhere, path + ": OpenCLIP text encoder has " + std::to_string(n) + " layers (need at least 2)");
    ck.text_encoder = keys::openclip_to_hf(oc, n - 1, ck.unknown_keys, kOpenCLIP);
    consumed.push_back(kOpenCLIP);
  } else {
    ck.text_encoder = clip_l_to_hf(all.sub(kCLIP), ck.unknown_keys, kCLIP);
    consumed.push_back(kCLIP);
  }
  if (!xl) {
    c.text = detect::text_from_hf(ck.text_encoder, c.family);
    if (c.unet.cross_attention_dim != c.text.hidden_size)
      fail(kWhere, path + ": UNet cross-attention dim " + std::to_string(c.unet.cross_attention_dim) +
                       " does not match the text encoder hidden size " + std::to_string(c.text.hidden_size));
  }

  const std::string prediction = detect::prediction_from_ldm(all, c.family, c.unet.in_channels);
  c.scheduler = detect::default_scheduler(c.family, prediction);
  if (!xl) {
    c.unet.sample_size = (c.family == "sd2" && prediction == "v_prediction") ? 96 : 64;  // 768 / 512 px
    c.pad_token_id = detect::default_pad_token_id(c.family);
    c.vae.scaling_factor = 0.18215f;
  }

  for (auto& [k, t] : all.tensors) {
    bool used = is_known_ignored(k);
    for (auto& p : consumed) used = used || starts_with(k, p);
    // SD1/SD2 files: keys under the other SD text-encoder prefix were always ignored, not reported.
    if (!xl) used = used || starts_with(k, kCLIP) || starts_with(k, kOpenCLIP);
    if (!used) ck.unknown_keys.push_back(k);
  }
  std::sort(ck.unknown_keys.begin(), ck.unknown_keys.end());
  return ck;
}

// ---- description helpers ----

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.2fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= (1 << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1 << 30));
  else if (b >= (1 << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

struct Stats {
  size_t tensors = 0;
  double params = 0, bytes = 0;
  std::map<std::string, size_t> dtypes;
};

Stats stats_of(const WeightStore& w) {
  Stats s;
  for (auto& [k, t] : w.tensors) {
    s.tensors++;
    s.params += (double)t.numel();
    s.bytes += (double)t.nbytes();
    s.dtypes[dtype_name(t.dtype())]++;
  }
  return s;
}

std::string stats_line(const Stats& s) {
  std::ostringstream o;
  o << s.tensors << " tensors, " << human_count(s.params) << " params, " << human_bytes(s.bytes) << ", dtypes";
  for (auto& [d, n] : s.dtypes) o << " " << d << "(" << n << ")";
  return o.str();
}

template <class T>
std::string list(const std::vector<T>& v) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < v.size(); i++) o << (i ? ", " : "") << v[i];
  o << "]";
  return o.str();
}

void describe_metadata(std::ostringstream& o, const std::map<std::string, std::string>& md) {
  if (md.empty()) return;
  o << "metadata (" << md.size() << " keys):\n";
  for (auto& [k, v] : md) {
    std::string val = v.size() > 80 ? v.substr(0, 77) + "..." : v;
    for (auto& ch : val)
      if (ch == '\n' || ch == '\r') ch = ' ';
    o << "  " << k << ": " << val << "\n";
  }
}

const char* family_title(const std::string& family) {
  if (family == "sdxl") return "SDXL base, CLIP-L + OpenCLIP bigG text encoders";
  if (family == "sdxl_refiner") return "SDXL refiner, OpenCLIP bigG text encoder";
  if (family == "sd2") return "Stable Diffusion 2.x, OpenCLIP text encoder";
  return "Stable Diffusion 1.x, CLIP-L text encoder";
}

std::string text_line(const TextEncoderConfig& t, int pad_id) {
  std::ostringstream o;
  o << "hidden " << t.hidden_size << ", layers " << t.num_hidden_layers << ", heads " << t.num_attention_heads
    << ", intermediate " << t.intermediate_size << ", vocab " << t.vocab_size << ", positions "
    << t.max_position_embeddings << ", act " << t.hidden_act;
  if (t.projection_dim) o << ", projection " << t.projection_dim;
  o << ", pad id " << pad_id;
  return o.str();
}

std::string describe_model(const Checkpoint& ck, bool single_file) {
  const ModelConfig& c = ck.config;
  std::ostringstream o;
  o << "path: " << ck.path << "\n";
  o << "format: " << (single_file ? "single-file LDM checkpoint" : "diffusers folder") << "\n";
  o << "family: " << c.family << " (" << family_title(c.family) << ")\n";
  o << "prediction: " << c.scheduler.prediction_type << "\n";
  const int px = c.unet.sample_size * c.vae.downscale();
  o << "resolution: " << px << "x" << px << " (native)\n";
  if (c.unet.in_channels == 9) o << "variant: inpainting (9 input channels)\n";
  o << "parts:\n";
  o << "  unet: " << stats_line(stats_of(ck.unet)) << "\n";
  o << "  vae: " << stats_line(stats_of(ck.vae)) << "\n";
  if (c.has_text_1()) {
    o << "  text_encoder: " << stats_line(stats_of(ck.text_encoder)) << "\n";
    o << "  tokenizer: " << (ck.tokenizer_dir.empty() ? "built-in CLIP vocabulary" : ck.tokenizer_dir) << "\n";
  }
  if (c.is_sdxl()) {
    o << "  text_encoder_2: " << stats_line(stats_of(ck.text_encoder_2)) << "\n";
    o << "  tokenizer_2: " << (ck.tokenizer_2_dir.empty() ? "built-in CLIP vocabulary, pads with \"!\"" : ck.tokenizer_2_dir)
      << "\n";
  }
  o << "unknown keys: " << ck.unknown_keys.size() << "\n";
  for (size_t i = 0; i < ck.unknown_keys.size() && i < 10; i++) o << "  " << ck.unknown_keys[i] << "\n";
  if (ck.unknown_keys.size() > 10) o << "  ... (" << ck.unknown_keys.size() - 10 << " more)\n";
  const UNetConfig& u = c.unet;
  std::vector<int> heads;
  for (size_t i = 0; i < u.block_out_channels.size(); i++) heads.push_back(u.heads_at(i));
  o << "config:\n";
  o << "  unet: in " << u.in_channels << ", out " << u.out_channels << ", channels " << list(u.block_out_channels)
    << ", layers_per_block " << u.layers_per_block << ", down " << list(u.down_block_types) << ", heads "
    << list(heads) << ", transformer depth " << list(u.transformer_layers_per_block) << ", cross_attention_dim "
    << u.cross_attention_dim << ", linear projection " << (u.use_linear_projection ? "yes" : "no")
    << ", sample_size " << u.sample_size << "\n";
  if (!u.addition_embed_type.empty())
    o << "  added conditioning: " << u.addition_embed_type << ", time embed dim " << u.addition_time_embed_dim
      << ", projection input " << u.projection_class_embeddings_input_dim << " = pooled " << c.text_2.projection_dim
      << " + " << detect::sdxl_time_ids(c.family) << " time ids x " << u.addition_time_embed_dim
      << (c.requires_aesthetics_score ? " (size, crop, aesthetic score)" : " (original size, crop, target size)")
      << ", force_zeros_for_empty_prompt " << (c.force_zeros_for_empty_prompt ? "true" : "false") << "\n";
  o << "  vae: channels " << list(c.vae.block_out_channels) << ", layers_per_block " << c.vae.layers_per_block
    << ", latent " << c.vae.latent_channels << ", scaling_factor " << c.vae.scaling_factor << ", tile "
    << c.vae.sample_size << " px\n";
  if (c.has_text_1()) o << "  text_encoder: " << text_line(c.text, c.pad_token_id) << "\n";
  if (c.is_sdxl()) o << "  text_encoder_2: " << text_line(c.text_2, c.pad_token_id_2) << "\n";
  const SchedulerConfig& s = c.scheduler;
  o << "  scheduler: " << s.beta_schedule << " betas " << s.beta_start << ".." << s.beta_end << ", "
    << s.num_train_timesteps << " train steps, spacing " << (s.timestep_spacing.empty() ? "per-sampler default" : s.timestep_spacing) << ", steps_offset " << s.steps_offset
    << ", prediction " << s.prediction_type << "\n";
  describe_metadata(o, ck.unet.metadata);
  return o.str();
}

std::string guess_kind(const WeightStore& w) {
  auto any = [&](const std::string& needle) {
    for (auto& [k, t] : w.tensors)
      if (k.find(needle) != std::string::npos) return true;
    return false;
  };
  auto has_prefix = [&](const std::string& p) { return !w.keys_with_prefix(p).empty(); };
  if (any("lora_down") || any("lora_A") || any("lora_up") || any("hada_w1") || any("lokr_w1")) return "LoRA / LyCORIS";
  if (has_prefix("control_model.") || any("controlnet_cond_embedding")) return "ControlNet";
  if (has_prefix(kUNet)) return "SD single-file checkpoint (incomplete)";
  if (has_prefix("conditioner.embedders.")) return "SDXL text encoders without a UNet";
  if (has_prefix("first_stage_model.") || has_prefix("encoder.conv_in.") || has_prefix("decoder.conv_in."))
    return "VAE";
  if (any("text_model.") || has_prefix("cond_stage_model.")) return "text encoder";
  if (has_prefix("down_blocks.") || has_prefix("input_blocks.")) return "UNet";
  return "unknown";
}

std::string describe_file(const std::string& path, const WeightStore& w) {
  std::ostringstream o;
  Stats s = stats_of(w);
  o << "path: " << path << "\n";
  o << "kind: " << guess_kind(w) << " (not a full SD1/SD2/SDXL model)\n";
  o << "tensors: " << s.tensors << "\n";
  o << "parameters: " << human_count(s.params) << "\n";
  o << "size: " << human_bytes(s.bytes) << "\n";
  o << "dtypes:";
  for (auto& [d, n] : s.dtypes) o << " " << d << "(" << n << ")";
  o << "\n";
  size_t shown = 0;
  for (auto& [k, t] : w.tensors) {
    if (shown++ == 5) break;
    o << "  " << k << " " << t.str() << "\n";
  }
  if (w.tensors.size() > 5) o << "  ... (" << w.tensors.size() - 5 << " more)\n";
  describe_metadata(o, w.metadata);
  return o.str();
}

}  // namespace

Checkpoint open_checkpoint(const std::string& path, const CheckpointOverrides& ov) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(kWhere, path + ": no such file or folder");
  Checkpoint ck;
  bool single_file = true;
  if (fs::is_directory(path, ec)) {
    if (!is_diffusers_folder(path))
      fail(kWhere, path + ": folder has no model_index.json (not a diffusers pipeline folder)");
    ck.path = path;
    load_diffusers_folder(path, ck);
    single_file = false;
  } else {
    ck = open_single_file(path, unwrap_state_dict(load_weights(path)));
  }
  apply_overrides(ck, ov, single_file);
  return ck;
}

std::string describe_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return describe_model(open_checkpoint(path), false);
  WeightStore w = unwrap_state_dict(load_weights(path));
  if (w.keys_with_prefix(kUNet).empty() ||
      (w.keys_with_prefix("cond_stage_model.").empty() && w.keys_with_prefix("conditioner.embedders.").empty()))
    return describe_file(path, w);
  try {
    return describe_model(open_single_file(path, w), true);
  } catch (const Error& e) {  // a broken model file is still described
    return describe_file(path, w) + "not loadable as a model: " + e.what() + "\n";
  }
}

}  // namespace easel
