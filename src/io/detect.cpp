#include "io/detect.h"

#include <map>
#include <set>

namespace easel::detect {
namespace {

std::string s(int i) { return std::to_string(i); }

const Shape& shape_of(const WeightStore& w, const std::string& key, const std::string& what) {
  auto it = w.tensors.find(key);
  if (it == w.tensors.end())
    fail("checkpoint", w.source + ": cannot detect the " + what + ": tensor '" + key + "' is missing");
  return it->second.shape();
}

// Distinct integers N in keys "<prefix>N.<...>".
std::set<int> indices(const WeightStore& w, const std::string& prefix) {
  std::set<int> out;
  for (auto& k : w.keys_with_prefix(prefix)) {
    size_t dot = k.find('.', prefix.size());
    std::string num = k.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
    if (!num.empty() && num.find_first_not_of("0123456789") == std::string::npos) out.insert(std::stoi(num));
  }
  return out;
}

// Count of 0..N-1 indices, checking there are no gaps.
int count_indices(const WeightStore& w, const std::string& prefix) {
  auto ids = indices(w, prefix);
  int n = (int)ids.size();
  if (n && *ids.rbegin() != n - 1)
    fail("checkpoint", w.source + ": keys '" + prefix + "N.*' are not numbered 0.." + s(n - 1));
  return n;
}

bool has_prefix(const WeightStore& w, const std::string& prefix) { return !w.keys_with_prefix(prefix).empty(); }

}  // namespace

namespace {

// SDXL single files (sgm's conditioner.embedders.N.*): base = CLIP-L + bigG, refiner = bigG alone.
std::string sdxl_family(const WeightStore& all) {
  const bool clip_l0 = has_prefix(all, kSdxlClipL);
  const bool bigg0 = has_prefix(all, kSdxlRefinerBigG);
  const bool bigg1 = has_prefix(all, kSdxlBigG);
  const bool any1 = has_prefix(all, "conditioner.embedders.1.");
  if (has_prefix(all, "cond_stage_model."))
    fail("checkpoint", all.source + ": both conditioner.embedders.* (SDXL) and cond_stage_model.* (SD1/SD2) text "
                                    "encoders present");
  if (clip_l0 && bigg1 && !bigg0) return "sdxl";
  if (bigg0 && !clip_l0 && !any1) return "sdxl_refiner";
  std::string found;
  for (const char* p : {kSdxlClipL, kSdxlRefinerBigG, kSdxlBigG, "conditioner.embedders.1.transformer."})
    if (has_prefix(all, p)) found += (found.empty() ? "" : ", ") + std::string(p) + "*";
  fail("checkpoint", all.source + ": SDXL checkpoint (conditioner.embedders.*) with an unexpected set of text encoders (" +
                         (found.empty() ? std::string("none recognised") : found) + "); expected " + kSdxlClipL +
                         "* (CLIP-L) + " + kSdxlBigG + "* (OpenCLIP bigG) for the base, or " + kSdxlRefinerBigG +
                         "* alone for the refiner");
}

}  // namespace

std::string family_from_ldm(const WeightStore& all) {
  if (!has_prefix(all, "model.diffusion_model.")) {
    std::string hint;
    if (has_prefix(all, "first_stage_model.") || has_prefix(all, "encoder.conv_in.") || has_prefix(all, "decoder.conv_in."))
      hint = " (it looks like a VAE file)";
    else if (has_prefix(all, "lora_") || (!all.tensors.empty() && all.tensors.begin()->first.find("lora") != std::string::npos))
      hint = " (it looks like a LoRA file)";
    else if (has_prefix(all, "control_model.") || has_prefix(all, "controlnet_cond_embedding."))
      hint = " (it looks like a ControlNet file)";
    else if (has_prefix(all, "down_blocks.") || has_prefix(all, "conv_in.weight"))
      hint = " (it looks like a diffusers UNet file; pass the diffusers folder instead)";
    else if (has_prefix(all, "conditioner.embedders."))
      hint = " (it has SDXL text encoders, conditioner.embedders.*, but no UNet)";
    fail("checkpoint", all.source + ": no UNet weights found (model.diffusion_model.*)" + hint);
  }
  if (has_prefix(all, "conditioner.embedders.")) return sdxl_family(all);
  const bool openclip = has_prefix(all, "cond_stage_model.model.");
  const bool clip_l = has_prefix(all, "cond_stage_model.transformer.");
  if (openclip && clip_l)
    fail("checkpoint", all.source + ": both cond_stage_model.model.* (OpenCLIP) and cond_stage_model.transformer.* (CLIP-L) present");
  if (openclip) return "sd2";
  if (clip_l) return "sd1";
  fail("checkpoint", all.source +
                         ": no text encoder weights found (cond_stage_model.transformer.* for SD1, "
                         "cond_stage_model.model.* for SD2, conditioner.embedders.* for SDXL)");
}

UNetConfig unet_from_ldm(const WeightStore& u, const std::string& family) {
  UNetConfig c;
  const Shape& conv_in = shape_of(u, "input_blocks.0.0.weight", "UNet input channels");  // [C0, in, 3, 3]
  if (conv_in.size() != 4) fail("checkpoint", u.source + ": input_blocks.0.0.weight is not a conv weight");
  c.in_channels = (int)conv_in[1];
  c.out_channels = (int)shape_of(u, "out.2.weight", "UNet output channels")[0];

  // input_blocks = conv_in + n levels of L resnets + (n-1) downsamplers.
  const int n_in = count_indices(u, "input_blocks.");
  int ops = 0;
  for (int k = 0; k < n_in; k++) ops += u.has("input_blocks." + s(k) + ".0.op.weight");
  const int n = ops + 1;
  if (n_in < 2 || (n_in - 1 - ops) % n != 0 || (n_in - 1 - ops) / n < 1)
    fail("checkpoint", u.source + ": UNet has " + s(n_in) + " input_blocks with " + s(ops) +
                           " downsamplers, which is not an SD UNet layout");
  const int L = (n_in - 1 - ops) / n;
  for (int i = 0; i < n - 1; i++)
    if (!u.has("input_blocks." + s((L + 1) * (i + 1)) + ".0.op.weight"))
      fail("checkpoint", u.source + ": expected a downsampler at input_blocks." + s((L + 1) * (i + 1)) + ".0.op");
  const int n_out = count_indices(u, "output_blocks.");
  if (n_out != n * (L + 1))
    fail("checkpoint", u.source + ": UNet has " + s(n_out) + " output_blocks, expected " + s(n * (L + 1)) + " for " +
                           s(n) + " levels of " + s(L) + " layers");
  c.layers_per_block = L;

  c.block_out_channels.assign(n, 0);
  c.down_block_types.assign(n, "DownBlock2D");
  c.up_block_types.assign(n, "UpBlock2D");
  c.transformer_layers_per_block.assign(n, 1);
  std::string first_attn;
  for (int i = 0; i < n; i++) {
    const std::string b = "input_blocks." + s((L + 1) * i + 1);
    c.block_out_channels[i] = (int)shape_of(u, b + ".0.in_layers.2.weight", "UNet level channels")[0];
    if (has_prefix(u, b + ".1.")) {
      c.down_block_types[i] = "CrossAttnDownBlock2D";
      c.up_block_types[n - 1 - i] = "CrossAttnUpBlock2D";
      c.transformer_layers_per_block[i] = count_indices(u, b + ".1.transformer_blocks.");
      if (first_attn.empty()) first_attn = b + ".1.";
    }
  }
  if (first_attn.empty()) fail("checkpoint", u.source + ": UNet has no attention blocks (input_blocks.N.1.*)");
  // The mid block uses the last level's depth (diffusers): take it from middle_block.1.
  if (c.down_block_types[n - 1] == "DownBlock2D" && has_prefix(u, "middle_block.1."))
    c.transformer_layers_per_block[n - 1] = count_indices(u, "middle_block.1.transformer_blocks.");

  c.cross_attention_dim = (int)shape_of(u, first_attn + "transformer_blocks.0.attn2.to_k.weight", "cross-attention dim")[1];
  c.use_linear_projection = shape_of(u, first_attn + "proj_in.weight", "projection type").size() == 2;

  c.attention_head_dim.assign(n, 8);
  c.num_attention_heads.clear();
  if (family != "sd1") {
    // SD2 and SDXL use 64-dim heads: diffusers' config stores heads per level, e.g. [5, 10, 20, 20]
    // (SD2.1), [5, 10, 20] (SDXL base), [6, 12, 24, 24] (refiner).
    for (int i = 0; i < n; i++) {
      int ch = c.block_out_channels[i];
      bool attn = c.down_block_types[i] != "DownBlock2D" || i == n - 1;  // last level: the mid block
      if (ch % 64 != 0 && attn)
        fail("checkpoint", u.source + ": UNet level " + s(i) + " has " + s(ch) +
                               " channels, not a multiple of " + (family == "sd2" ? "SD2" : "SDXL") +
                               "'s 64-dim attention heads");
      c.attention_head_dim[i] = std::max(1, ch / 64);
    }
  } else {
    for (int i = 0; i < n; i++)
      if (c.block_out_channels[i] % 8 != 0)
        fail("checkpoint", u.source + ": UNet level " + s(i) + " has " + s(c.block_out_channels[i]) +
                               " channels, not divisible by SD1's 8 attention heads");
  }
  return c;
}

int sdxl_time_ids(const std::string& family) { return family == "sdxl_refiner" ? 5 : 6; }

void sdxl_added_conditioning(UNetConfig& c, const WeightStore& u, const std::string& family, int pooled_dim) {
  const std::string w1 = "label_emb.0.0.weight", w2 = "label_emb.0.2.weight";
  if (!u.has(w1) || !u.has(w2))
    fail("checkpoint", u.source + ": SDXL UNet without its added-conditioning embedding: tensor 'model.diffusion_model." +
                           (u.has(w1) ? w2 : w1) + "' is missing (truncated file?)");
  const Shape& a = u.tensors.at(w1).shape();  // [T, pooled + n_ids * D]
  const Shape& b = u.tensors.at(w2).shape();  // [T, T]
  const Shape& t = shape_of(u, "time_embed.0.weight", "UNet time embedding size");  // [T, C0]
  if (a.size() != 2 || b.size() != 2 || a[0] != t[0] || b[0] != t[0] || b[1] != t[0])
    fail("checkpoint", u.source + ": label_emb.0.0.weight " + shape_str(a) + " / label_emb.0.2.weight " + shape_str(b) +
                           " do not fit the time embedding (time_embed.0.weight " + shape_str(t) + ")");
  const int in = (int)a[1], n_ids = sdxl_time_ids(family);
  const std::string what = family == "sdxl_refiner" ? "5 (refiner: size, crop, aesthetic score)"
                                                    : "6 (base: original size, crop, target size)";
  if (pooled_dim <= 0 || in <= pooled_dim || (in - pooled_dim) % n_ids != 0)
    fail("checkpoint", u.source + ": inconsistent pooled dims: label_emb.0.0.weight takes " + s(in) +
                           " inputs, which is not the text encoder's pooled dim " + s(pooled_dim) + " + " + what +
                           " time ids times an embedding size");
  c.addition_embed_type = "text_time";
  c.addition_time_embed_dim = (in - pooled_dim) / n_ids;
  c.projection_class_embeddings_input_dim = in;
}

VAEConfig vae_from_ldm(const WeightStore& v) {
  VAEConfig c;
  if (v.tensors.empty()) fail("checkpoint", v.source + ": no VAE weights found (first_stage_model.*)");
  c.in_channels = (int)shape_of(v, "encoder.conv_in.weight", "VAE input channels")[1];
  c.out_channels = (int)shape_of(v, "decoder.conv_out.weight", "VAE output channels")[0];
  c.latent_channels = (int)shape_of(v, "decoder.conv_in.weight", "VAE latent channels")[1];
  const int n = count_indices(v, "encoder.down.");
  if (n < 1) fail("checkpoint", v.source + ": no VAE encoder levels (encoder.down.N.*)");
  c.layers_per_block = count_indices(v, "encoder.down.0.block.");
  if (c.layers_per_block < 1) fail("checkpoint", v.source + ": no VAE resnets (encoder.down.0.block.N.*)");
  c.block_out_channels.assign(n, 0);
  for (int i = 0; i < n; i++)
    c.block_out_channels[i] = (int)shape_of(v, "encoder.down." + s(i) + ".block.0.conv1.weight", "VAE level channels")[0];
  const int n_up = count_indices(v, "decoder.up.");
  if (n_up != n)
    fail("checkpoint", v.source + ": VAE has " + s(n) + " encoder levels but " + s(n_up) + " decoder levels");
  return c;
}

TextEncoderConfig text_from_hf(const WeightStore& te, const std::string& family) {
  TextEncoderConfig c;
  if (te.tensors.empty()) fail("checkpoint", te.source + ": no text encoder weights found");
  const Shape& tok = shape_of(te, "embeddings.token_embedding.weight", "text encoder vocabulary");  // [V, C]
  c.vocab_size = (int)tok[0];
  c.hidden_size = (int)tok[1];
  c.max_position_embeddings = (int)shape_of(te, "embeddings.position_embedding.weight", "text positions")[0];
  c.num_hidden_layers = count_indices(te, "encoder.layers.");
  if (c.num_hidden_layers < 1) fail("checkpoint", te.source + ": text encoder has no layers (encoder.layers.N.*)");
  c.intermediate_size = (int)shape_of(te, "encoder.layers.0.mlp.fc1.weight", "text MLP size")[0];
  if (c.hidden_size % 64 != 0)
    fail("checkpoint", te.source + ": text encoder hidden size " + s(c.hidden_size) +
                           " is not a multiple of CLIP's 64-dim heads (a single file carries no head count)");
  c.num_attention_heads = c.hidden_size / 64;
  c.hidden_act = family == "sd2" ? "gelu" : "quick_gelu";
  c.layer_norm_eps = 1e-5f;
  c.projection_dim = 0;
  return c;
}

TextEncoderConfig text_2_from_hf(const WeightStore& te) {
  TextEncoderConfig c = text_from_hf(te, "sd2");  // OpenCLIP: gelu
  auto it = te.tensors.find("text_projection.weight");
  if (it == te.tensors.end())
    fail("checkpoint", te.source + ": the OpenCLIP bigG text encoder has no text_projection (needed for SDXL's pooled "
                                   "text embedding)");
  const Shape& p = it->second.shape();  // [proj, C]
  if (p.size() != 2 || p[1] != c.hidden_size)
    fail("checkpoint", te.source + ": text_projection has shape " + shape_str(p) + ", expected [proj, " +
                           s(c.hidden_size) + "] (HF layout)");
  c.projection_dim = (int)p[0];
  return c;
}

std::string prediction_from_ldm(const WeightStore& all, const std::string& family, int in_channels) {
  auto md = all.metadata.find("modelspec.prediction_type");
  if (md != all.metadata.end()) {
    if (md->second == "v" || md->second == "v_prediction") return "v_prediction";
    if (md->second == "epsilon" || md->second == "eps") return "epsilon";
  }
  if (all.has("v_pred")) return "v_prediction";
  if (family != "sd2") return "epsilon";
  if (in_channels == 9) return "epsilon";  // stabilityai/stable-diffusion-2-inpainting
  // diffusers: "epsilon" if global_step == 875000 (the 512-base) else "v_prediction".
  auto gs = all.metadata.find("global_step");
  if (gs != all.metadata.end() && gs->second == "875000") return "epsilon";
  auto gt = all.tensors.find("global_step");
  if (gt != all.tensors.end() && gt->second.numel() == 1) {
    const Tensor& t = gt->second;
    int64_t v = t.dtype() == DType::I64 ? t.data<int64_t>()[0]
              : t.dtype() == DType::I32 ? t.data<int32_t>()[0]
                                        : (int64_t)t.to_vector()[0];
    if (v == 875000) return "epsilon";
  }
  return "v_prediction";
}

SchedulerConfig default_scheduler(const std::string& family, const std::string& prediction_type) {
  // runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 scheduler_config.json:
  // beta 0.00085..0.012 scaled_linear, 1000 steps, set_alpha_to_one false, steps_offset 1,
  // clip_sample false, no timestep_spacing (=> each scheduler class's default).
  SchedulerConfig s;
  s.num_train_timesteps = 1000;
  s.beta_start = 0.00085f;
  s.beta_end = 0.012f;
  s.beta_schedule = "scaled_linear";
  s.set_alpha_to_one = false;
  s.steps_offset = 1;
  s.clip_sample = false;
  s.timestep_spacing = "";
  s.prediction_type = prediction_type;
  // stabilityai/stable-diffusion-xl-base-1.0 and -refiner-1.0: EulerDiscreteScheduler,
  // timestep_spacing "leading", interpolation_type linear, no Karras sigmas.
  if (family == "sdxl" || family == "sdxl_refiner") s.timestep_spacing = "leading";
  return s;
}

int default_pad_token_id(const std::string& family) { return family == "sd2" ? 0 : 49407; }

}  // namespace easel::detect
