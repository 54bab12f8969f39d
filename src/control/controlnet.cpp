// ControlNetModel; see controlnet.h for the references.
#include "control/controlnet.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/keys_ldm.h"

namespace easel {

namespace fs = std::filesystem;
using nn::join;

namespace {

const char* kWhere = "controlnet";
std::string s(size_t i) { return std::to_string(i); }

// Distinct integers N in keys "<prefix>N.<...>", checked to be 0..n-1.
int count_indices(const WeightStore& w, const std::string& prefix) {
  std::set<int> ids;
  for (auto& k : w.keys_with_prefix(prefix)) {
    size_t dot = k.find('.', prefix.size());
    std::string num = k.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
    if (!num.empty() && num.find_first_not_of("0123456789") == std::string::npos) ids.insert(std::stoi(num));
  }
  int n = (int)ids.size();
  if (n && *ids.rbegin() != n - 1)
    fail(kWhere, w.source + ": keys '" + prefix + "N.*' are not numbered 0.." + s(n - 1) + " (truncated file?)");
  return n;
}

bool has_prefix(const WeightStore& w, const std::string& p) { return !w.keys_with_prefix(p).empty(); }

const Shape& shape_of(const WeightStore& w, const std::string& key) {
  auto it = w.tensors.find(key);
  if (it == w.tensors.end())
    fail(kWhere, w.source + ": tensor '" + key + "' is missing (not a complete ControlNet, or a truncated file)");
  return it->second.shape();
}

// Heads per level by the family's convention (see DESIGN.md): SD1 8 heads, SD2/SDXL 64-dim heads.
void set_heads(UNetConfig& c, const std::string& family) {
  const size_t n = c.block_out_channels.size();
  c.num_attention_heads.clear();
  c.attention_head_dim.assign(n, 8);
  if (family == "sd1") return;
  for (size_t i = 0; i < n; i++) c.attention_head_dim[i] = std::max(1, c.block_out_channels[i] / 64);
}

}  // namespace

// ---- conditioning embedding -----------------------------------------------------------------
void ControlNetConditioningEmbedding::load(const WeightStore& w, const std::string& prefix, int64_t cond_channels,
                                           const std::vector<int>& ch, int64_t out_channels) {
  if (ch.empty()) fail(kWhere, w.source + ": conditioning_embedding_out_channels is empty");
  conv_in.load(w, join(prefix, "conv_in"), cond_channels, ch[0], 3);
  blocks.assign(2 * (ch.size() - 1), {});
  for (size_t i = 0; i + 1 < ch.size(); i++) {
    blocks[2 * i].load(w, join(prefix, "blocks." + s(2 * i)), ch[i], ch[i], 3);
    blocks[2 * i + 1].load(w, join(prefix, "blocks." + s(2 * i + 1)), ch[i], ch[i + 1], 3, /*stride=*/2, /*pad=*/1);
  }
  conv_out.load(w, join(prefix, "conv_out"), ch.back(), out_channels, 3);
}

Tensor ControlNetConditioningEmbedding::operator()(const Tensor& cond) const {
  Tensor x = ops::silu(conv_in(cond));
  for (const auto& b : blocks) x = ops::silu(b(x));
  return conv_out(x);
}

// ---- model ----------------------------------------------------------------------------------
void ControlNetModel::load(const WeightStore& w, const ControlNetConfig& cfg) {
  config = cfg;
  source = w.source;
  const UNetConfig& u = cfg.unet;
  const auto& ch = u.block_out_channels;
  const size_t levels = ch.size();
  if (levels == 0 || u.down_block_types.size() != levels)
    fail(kWhere, w.source + ": block_out_channels and down_block_types lengths differ");
  const int64_t c0 = ch[0], temb = 4 * c0;
  time_embedding.load(w, "time_embedding", c0, temb);
  if (u.addition_embed_type == "text_time") {
    add_embedding.emplace();
    add_embedding->load(w, "add_embedding", u.projection_class_embeddings_input_dim, temb);
  } else if (u.addition_embed_type.empty()) {
    add_embedding.reset();
  } else {
    fail(kWhere, w.source + ": unsupported addition_embed_type '" + u.addition_embed_type + "'");
  }
  conv_in.load(w, "conv_in", u.in_channels, c0, 3);
  controlnet_cond_embedding.load(w, "controlnet_cond_embedding", cfg.conditioning_channels,
                                 cfg.conditioning_embedding_out_channels, c0);

  down_blocks.assign(levels, {});
  controlnet_down_blocks.clear();
  auto zero_conv = [&](int64_t c) {
    controlnet_down_blocks.emplace_back();
    controlnet_down_blocks.back().load(w, "controlnet_down_blocks." + s(controlnet_down_blocks.size() - 1), c, c, 1);
  };
  zero_conv(c0);
  int64_t out = c0;
  for (size_t i = 0; i < levels; i++) {
    int64_t in = out;
    out = ch[i];
    down_blocks[i].load(w, "down_blocks." + s(i), u, i, in, out, temb);  // the UNet's own block
    for (int j = 0; j < u.layers_per_block; j++) zero_conv(out);
    if (i + 1 < levels) zero_conv(out);
  }
  if (cfg.mid_block_attention) {
    mid_block.load(w, "mid_block", u, ch.back(), temb);
  } else {  // UNetMidBlock2D(num_layers=0, add_attention=False): a single resnet
    mid_block = UNetMidBlock();
    mid_block.resnets.assign(1, {});
    mid_block.resnets[0].load(w, "mid_block.resnets.0", ch.back(), ch.back(), temb, u.norm_num_groups, u.norm_eps);
  }
  controlnet_mid_block.load(w, "controlnet_mid_block", ch.back(), ch.back(), 1);
}

Tensor ControlNetModel::embed_condition(const Tensor& guide01) const {
  if (guide01.dim() != 4 || guide01.size(1) != config.conditioning_channels)
    fail(kWhere, source + ": guide " + guide01.str() + " is not [B, " + s(config.conditioning_channels) + ", H, W]");
  Tensor g = guide01.to(DType::F32);
  if (config.bgr) {  // diffusers: torch.flip(controlnet_cond, dims=[1])
    const int64_t B = g.size(0), C = g.size(1), hw = g.size(2) * g.size(3);
    Tensor f = Tensor::empty(g.shape());
    for (int64_t b = 0; b < B; b++)
      for (int64_t c = 0; c < C; c++)
        std::copy_n(g.f32() + (b * C + (C - 1 - c)) * hw, hw, f.f32() + (b * C + c) * hw);
    g = f;
  }
  return controlnet_cond_embedding(g);
}

ControlNetOutput ControlNetModel::forward(const Tensor& sample, const std::vector<float>& timesteps,
                                          const Tensor& context, const Tensor& cond_embedding,
                                          const Tensor* text_embeds, const Tensor* time_ids,
                                          const UNetTrace* trace) const {
  const UNetConfig& u = config.unet;
  if (sample.dim() != 4 || sample.size(1) != u.in_channels)
    fail(kWhere, source + ": sample " + sample.str() + " is not [B, " + s(u.in_channels) + ", h, w]");
  const int64_t B = sample.size(0);
  if (context.dim() != 3 || context.size(0) != B || context.size(2) != u.cross_attention_dim)
    fail(kWhere, source + ": context " + context.str() + " is not [" + s(B) + ", L, " + s(u.cross_attention_dim) +
                     "] (a ControlNet for another base model?)");
  std::vector<float> ts = timesteps;
  if (ts.size() == 1 && B > 1) ts.assign(B, timesteps[0]);
  if ((int64_t)ts.size() != B) fail(kWhere, s(ts.size()) + " timesteps for a batch of " + s(B));

  Tensor temb_act = ops::silu(unet_time_embed(u, time_embedding, add_embedding ? &*add_embedding : nullptr, ts,
                                              text_embeds, time_ids, trace));  // [B, 4*C0]
  Tensor x = conv_in(sample);  // [B, C0, h, w]
  if (trace) (*trace)("conv_in", x);
  const Tensor& ce = cond_embedding;
  if (ce.dim() != 4 || ce.size(1) != x.size(1) || ce.size(2) != x.size(2) || ce.size(3) != x.size(3) ||
      (ce.size(0) != B && ce.size(0) != 1))
    fail(kWhere, source + ": guide embedding " + ce.str() + " does not match the latent " + x.str() +
                     " (guide size must be the image size)");
  if (ce.size(0) == B) {
    ops::add_(x, ce);
  } else {
    const Tensor c = ce.to(DType::F32);
    const int64_t n = c.numel();
    for (int64_t b = 0; b < B; b++) {  // sample + controlnet_cond broadcast over the batch
      float* px = x.f32() + b * n;
      const float* pc = c.f32();
      for (int64_t k = 0; k < n; k++) px[k] += pc[k];
    }
  }
  if (trace) (*trace)("controlnet_cond_embedding+conv_in", x);

  std::vector<Tensor> skips;
  skips.push_back(x);
  for (size_t i = 0; i < down_blocks.size(); i++)
    x = down_blocks[i].forward(std::move(x), temb_act, context, skips, nullptr, trace, "down_blocks." + s(i));
  x = mid_block.forward(std::move(x), temb_act, context, trace, "mid_block");
  if (skips.size() != controlnet_down_blocks.size())
    fail(kWhere, source + ": " + s(skips.size()) + " skips for " + s(controlnet_down_blocks.size()) + " zero convs");

  ControlNetOutput o;
  o.down.reserve(skips.size());
  for (size_t i = 0; i < skips.size(); i++) {
    o.down.push_back(controlnet_down_blocks[i](skips[i]));
    if (trace) (*trace)("controlnet_down_blocks." + s(i), o.down.back());
  }
  o.mid = controlnet_mid_block(x);
  if (trace) (*trace)("controlnet_mid_block", o.mid);
  if (config.global_pool_conditions) {
    // torch.mean(sample, dim=(2, 3), keepdim=True), kept at full size (the value the UNet's broadcast
    // add would give every position), so the residuals keep the skips' shapes.
    auto pool = [](const Tensor& t) {
      const int64_t n = t.size(0) * t.size(1), hw = t.size(2) * t.size(3);
      Tensor r = Tensor::empty(t.shape());
      for (int64_t i = 0; i < n; i++) {
        double acc = 0;
        for (int64_t j = 0; j < hw; j++) acc += t.f32()[i * hw + j];
        std::fill_n(r.f32() + i * hw, hw, (float)(acc / hw));
      }
      return r;
    };
    for (auto& d : o.down) d = pool(d);
    o.mid = pool(o.mid);
  }
  return o;
}

// ---- configs --------------------------------------------------------------------------------
ControlNetConfig controlnet_config_from_weights(const WeightStore& w, const std::string& family_in) {
  ControlNetConfig c;
  UNetConfig& u = c.unet;
  const Shape& ci = shape_of(w, "conv_in.weight");  // [C0, in, 3, 3]
  if (ci.size() != 4) fail(kWhere, w.source + ": conv_in.weight is not a conv weight");
  u.in_channels = u.out_channels = (int)ci[1];
  const int n = count_indices(w, "down_blocks.");
  if (n < 1) fail(kWhere, w.source + ": no down_blocks.* (not a ControlNet, or a truncated file)");
  u.layers_per_block = count_indices(w, "down_blocks.0.resnets.");
  if (u.layers_per_block < 1) fail(kWhere, w.source + ": down_blocks.0 has no resnets");
  u.block_out_channels.assign(n, 0);
  u.down_block_types.assign(n, "DownBlock2D");
  u.up_block_types.assign(n, "UpBlock2D");
  u.transformer_layers_per_block.assign(n, 1);
  std::string first_attn;
  for (int i = 0; i < n; i++) {
    const std::string b = "down_blocks." + s(i) + ".";
    u.block_out_channels[i] = (int)shape_of(w, b + "resnets.0.conv1.weight")[0];
    if (has_prefix(w, b + "attentions.")) {
      u.down_block_types[i] = "CrossAttnDownBlock2D";
      u.up_block_types[n - 1 - i] = "CrossAttnUpBlock2D";
      u.transformer_layers_per_block[i] = count_indices(w, b + "attentions.0.transformer_blocks.");
      if (first_attn.empty() && u.transformer_layers_per_block[i] > 0) first_attn = b + "attentions.0.";
    }
  }
  c.mid_block_attention = has_prefix(w, "mid_block.attentions.");
  if (c.mid_block_attention) {
    int d = count_indices(w, "mid_block.attentions.0.transformer_blocks.");
    if (u.down_block_types[n - 1] == "DownBlock2D") u.transformer_layers_per_block[n - 1] = d;
    if (first_attn.empty() && d > 0) first_attn = "mid_block.attentions.0.";
  }
  if (!first_attn.empty()) {
    u.cross_attention_dim = (int)shape_of(w, first_attn + "transformer_blocks.0.attn2.to_k.weight")[1];
    u.use_linear_projection = shape_of(w, first_attn + "proj_in.weight").size() == 2;
  }
  if (w.has("add_embedding.linear_1.weight")) {
    u.addition_embed_type = "text_time";
    u.projection_class_embeddings_input_dim = (int)shape_of(w, "add_embedding.linear_1.weight")[1];
    u.addition_time_embed_dim = 256;  // SDXL's; pipelines override it from the base model
  }
  c.conditioning_channels = (int)shape_of(w, "controlnet_cond_embedding.conv_in.weight")[1];
  c.conditioning_embedding_out_channels = {(int)shape_of(w, "controlnet_cond_embedding.conv_in.weight")[0]};
  const int nb = count_indices(w, "controlnet_cond_embedding.blocks.");
  if (nb % 2) fail(kWhere, w.source + ": controlnet_cond_embedding has an odd number of blocks (" + s(nb) + ")");
  for (int k = 1; k < nb; k += 2)
    c.conditioning_embedding_out_channels.push_back((int)shape_of(w, "controlnet_cond_embedding.blocks." + s(k) + ".weight")[0]);
  std::string fam = family_in;
  if (fam.empty()) fam = !u.addition_embed_type.empty() ? "sdxl" : u.cross_attention_dim == 1024 ? "sd2" : "sd1";
  c.family = fam == "sdxl_refiner" ? "sdxl" : fam;
  set_heads(u, c.family);
  return c;
}

ControlNetConfig controlnet_config_from_unet(const UNetConfig& unet, const std::string& family) {
  ControlNetConfig c;
  c.unet = unet;
  c.family = family == "sdxl_refiner" ? "sdxl" : family;
  return c;
}

ControlNetConfig parse_controlnet_config(const std::string& file) {
  using json = nlohmann::json;
  const json j = read_json_object(file, kWhere);
  ControlNetConfig c;
  UNetConfig& u = c.unet;
  auto has = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  try {
    for (const char* k : {"class_embed_type", "encoder_hid_dim_type", "encoder_hid_dim", "num_class_embeds"})
      if (has(k)) fail(kWhere, file + ": field '" + std::string(k) + "' is not supported (SD1/SD2/SDXL ControlNets)");
    if (has("in_channels")) u.in_channels = u.out_channels = j["in_channels"].get<int>();
    if (has("block_out_channels")) u.block_out_channels = j["block_out_channels"].get<std::vector<int>>();
    const size_t n = u.block_out_channels.size();
    if (n == 0) fail(kWhere, file + ": block_out_channels is empty");
    if (has("down_block_types")) u.down_block_types = j["down_block_types"].get<std::vector<std::string>>();
    if (u.down_block_types.size() != n) fail(kWhere, file + ": down_block_types needs " + s(n) + " entries");
    u.up_block_types.assign(n, "UpBlock2D");
    auto int_list = [&](const char* k, std::vector<int>& out) {
      if (!has(k)) return;
      if (j[k].is_number_integer()) out.assign(n, j[k].get<int>());
      else out = j[k].get<std::vector<int>>();
      if (out.size() != n) fail(kWhere, file + ": field '" + std::string(k) + "' needs " + s(n) + " entries");
    };
    if (has("layers_per_block")) u.layers_per_block = j["layers_per_block"].get<int>();
    u.attention_head_dim.assign(n, 8);
    int_list("attention_head_dim", u.attention_head_dim);
    u.num_attention_heads.clear();
    int_list("num_attention_heads", u.num_attention_heads);
    u.transformer_layers_per_block.assign(n, 1);
    int_list("transformer_layers_per_block", u.transformer_layers_per_block);
    if (has("cross_attention_dim")) u.cross_attention_dim = j["cross_attention_dim"].get<int>();
    if (has("use_linear_projection")) u.use_linear_projection = j["use_linear_projection"].get<bool>();
    if (has("norm_num_groups")) u.norm_num_groups = j["norm_num_groups"].get<int>();
    if (has("norm_eps")) u.norm_eps = j["norm_eps"].get<float>();
    if (has("flip_sin_to_cos")) u.flip_sin_to_cos = j["flip_sin_to_cos"].get<bool>();
    if (has("freq_shift")) u.freq_shift = j["freq_shift"].get<int>();
    if (has("addition_embed_type")) {
      u.addition_embed_type = j["addition_embed_type"].get<std::string>();
      if (u.addition_embed_type != "text_time")
        fail(kWhere, file + ": addition_embed_type '" + u.addition_embed_type + "' is not supported (SDXL's text_time)");
      if (has("addition_time_embed_dim")) u.addition_time_embed_dim = j["addition_time_embed_dim"].get<int>();
      if (has("projection_class_embeddings_input_dim"))
        u.projection_class_embeddings_input_dim = j["projection_class_embeddings_input_dim"].get<int>();
    }
    if (has("conditioning_channels")) c.conditioning_channels = j["conditioning_channels"].get<int>();
    if (has("conditioning_embedding_out_channels"))
      c.conditioning_embedding_out_channels = j["conditioning_embedding_out_channels"].get<std::vector<int>>();
    if (has("mid_block_type")) {
      std::string t = j["mid_block_type"].get<std::string>();
      if (t != "UNetMidBlock2DCrossAttn" && t != "UNetMidBlock2D")
        fail(kWhere, file + ": unsupported mid_block_type '" + t + "'");
      c.mid_block_attention = t == "UNetMidBlock2DCrossAttn";
    }
    if (has("global_pool_conditions")) c.global_pool_conditions = j["global_pool_conditions"].get<bool>();
    if (has("controlnet_conditioning_channel_order")) {
      std::string o = j["controlnet_conditioning_channel_order"].get<std::string>();
      if (o != "rgb" && o != "bgr") fail(kWhere, file + ": controlnet_conditioning_channel_order '" + o + "'");
      c.bgr = o == "bgr";
    }
    if (has("resnet_time_scale_shift") && j["resnet_time_scale_shift"].get<std::string>() != "default")
      fail(kWhere, file + ": resnet_time_scale_shift other than 'default' is not supported");
  } catch (const nlohmann::json::exception& e) {
    fail(kWhere, file + ": bad field type: " + e.what());
  }
  c.family = !u.addition_embed_type.empty() ? "sdxl" : u.cross_attention_dim == 1024 ? "sd2" : "sd1";
  return c;
}

// ---- lllyasviel / LDM keys ------------------------------------------------------------------
WeightStore controlnet_from_ldm(const WeightStore& ldm, std::vector<std::string>& unknown) {
  // Structure from the input_blocks numbering (as detect::unet_from_ldm, without output_blocks).
  const int n_in = count_indices(ldm, "input_blocks.");
  int ops = 0;
  for (int k = 0; k < n_in; k++) ops += ldm.has("input_blocks." + s(k) + ".0.op.weight");
  const int n = ops + 1;
  if (n_in < 2 || (n_in - 1 - ops) % n != 0)
    fail(kWhere, ldm.source + ": " + s(n_in) + " input_blocks with " + s(ops) +
                     " downsamplers is not a ControlNet layout (truncated file?)");
  UNetConfig u;
  u.layers_per_block = (n_in - 1 - ops) / n;
  u.block_out_channels.assign(n, 1);
  u.down_block_types.assign(n, "DownBlock2D");
  u.up_block_types.assign(n, "UpBlock2D");
  for (int i = 0; i < n; i++)
    if (has_prefix(ldm, "input_blocks." + s((u.layers_per_block + 1) * i + 1) + ".1."))
      u.down_block_types[i] = "CrossAttnDownBlock2D";
  if (ldm.has("label_emb.0.0.weight")) u.addition_embed_type = "text_time";
  std::vector<keys::PrefixMap> t = keys::ldm_unet_table(u);
  // input_hint_block: 0 conv_in, 2, 4, ... blocks.0, 1, ..., the last conv_out (14 in every real model).
  // Convolutions sit at the even indices (the SiLUs between them hold no weights).
  int last = 0;
  while (ldm.has("input_hint_block." + s(last + 2) + ".weight")) last += 2;
  if (last < 2) fail(kWhere, ldm.source + ": input_hint_block has no convolutions (truncated file?)");
  t.push_back({"input_hint_block.0.", "controlnet_cond_embedding.conv_in.", keys::Rule::Same});
  for (int k = 2; k < last; k += 2)
    t.push_back({"input_hint_block." + s(k) + ".", "controlnet_cond_embedding.blocks." + s(k / 2 - 1) + ".",
                 keys::Rule::Same});
  t.push_back({"input_hint_block." + s(last) + ".", "controlnet_cond_embedding.conv_out.", keys::Rule::Same});
  const int nz = count_indices(ldm, "zero_convs.");
  for (int k = 0; k < nz; k++)
    t.push_back({"zero_convs." + s(k) + ".0.", "controlnet_down_blocks." + s(k) + ".", keys::Rule::Same});
  t.push_back({"middle_block_out.0.", "controlnet_mid_block.", keys::Rule::Same});
  return keys::apply_table(ldm, t, unknown, "");
}

bool is_controlnet_store(const WeightStore& w) {
  for (const char* k : {"controlnet_cond_embedding.conv_in.weight", "input_hint_block.0.weight",
                        "control_model.input_hint_block.0.weight", "state_dict.control_model.input_hint_block.0.weight"})
    if (w.has(k)) return true;
  return false;
}

std::string describe_controlnet(const std::string& path) {
  std::error_code ec;
  std::string layout;
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(fs::path(path) / "config.json", ec)) return "";
    std::ifstream in(fs::path(path) / "config.json");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    if (text.find("\"ControlNetModel\"") == std::string::npos) return "";
    layout = "diffusers folder";
  } else {
    WeightStore w = load_weights(path);
    bool ll = false;
    for (const char* k : {"input_hint_block.0.weight", "control_model.input_hint_block.0.weight",
                          "state_dict.control_model.input_hint_block.0.weight"})
      ll |= w.has(k);
    if (!ll && !w.has("controlnet_cond_embedding.conv_in.weight")) return "";
    layout = ll ? "lllyasviel (LDM keys)" : "diffusers keys, single file";
  }
  ControlNetModel m = load_controlnet(path);
  const UNetConfig& u = m.config.unet;
  auto list = [](const std::vector<int>& v) {
    std::string r;
    for (int x : v) r += (r.empty() ? "" : ", ") + std::to_string(x);
    return "[" + r + "]";
  };
  std::vector<int> depth;
  for (size_t i = 0; i < u.block_out_channels.size(); i++)
    depth.push_back(u.down_block_types[i] == "DownBlock2D" ? -1 : u.transformer_layers_per_block[i]);
  size_t params = 0;
  for (auto& [k, t] : (fs::is_directory(path, ec) ? load_part_weights(path, {"diffusion_pytorch_model"})
                                                  : load_weights(path)).tensors)
    params += (size_t)t.numel();
  std::string family = m.config.family == "sdxl" ? "SDXL" : m.config.family == "sd2" ? "SD2.x" : "SD1.x";
  return "kind: ControlNet\nlayout: " + layout + "\nbase model: " + family + " (cross-attention " +
         std::to_string(u.cross_attention_dim) + ")\nlevels: " + list(u.block_out_channels) +
         ", layers per block " + std::to_string(u.layers_per_block) + "\nattention depth per level (-1 none): " +
         list(depth) + ", mid block " + (m.config.mid_block_attention ? "with" : "without") +
         " attention\nhint channels: " + list(m.config.conditioning_embedding_out_channels) +
         "\nresiduals: " + std::to_string(m.num_down_residuals()) + " down + mid\nglobal pooling: " +
         (m.config.global_pool_conditions ? "yes" : "no") + "\nparameters: " + std::to_string(params) + "\n";
}

ControlNetModel load_controlnet(const std::string& path, const ModelConfig* base) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(kWhere, path + ": file not found");
  WeightStore w;
  std::optional<ControlNetConfig> cfg;
  if (fs::is_directory(path, ec)) {
    fs::path cj = fs::path(path) / "config.json";
    if (!fs::exists(cj, ec)) fail(kWhere, path + ": a ControlNet folder needs config.json");
    cfg = parse_controlnet_config(cj.string());
    w = load_part_weights(path, {"diffusion_pytorch_model"});
  } else {
    w = load_weights(path);
  }
  // Wrappers: Lightning "state_dict.", lllyasviel "control_model.".
  for (const std::string p : {"state_dict.", "control_model."}) {
    if (w.keys_with_prefix(p).empty()) continue;
    WeightStore inner = w.sub(p);
    inner.source = path;
    w = std::move(inner);
  }
  w.source = path;
  if (!is_controlnet_store(w))
    fail(kWhere, path + ": not a ControlNet (no controlnet_cond_embedding.* or input_hint_block.* weights)");
  if (w.has("input_hint_block.0.weight")) {
    std::vector<std::string> unknown;
    w = controlnet_from_ldm(w, unknown);
    w.source = path;
    if (!unknown.empty())
      fail(kWhere, path + ": " + s(unknown.size()) + " unexpected ControlNet keys, e.g. '" + unknown[0] + "'");
  }
  const std::string base_family = base ? (base->is_sdxl() ? "sdxl" : base->family) : "";
  // Without config.json the family is guessed from the weights (for messages); once the ControlNet is
  // known to fit `base`, the heads follow the base model's convention.
  const bool from_shapes = !cfg;
  ControlNetConfig shapes = controlnet_config_from_weights(w, cfg ? cfg->family : "");
  if (!cfg) {
    cfg = shapes;
  } else if (cfg->unet.block_out_channels != shapes.unet.block_out_channels ||
             cfg->unet.layers_per_block != shapes.unet.layers_per_block ||
             cfg->unet.down_block_types != shapes.unet.down_block_types) {
    fail(kWhere, path + ": config.json does not match the weights (block_out_channels, layers_per_block or "
                        "down_block_types)");
  }
  if (base) {
    const UNetConfig& bu = base->unet;
    const UNetConfig& cu = cfg->unet;
    auto name = [](const std::string& f) { return f == "sdxl" ? "SDXL" : f == "sd2" ? "SD2.x" : "SD1.x"; };
    if (cu.cross_attention_dim != bu.cross_attention_dim || cu.addition_embed_type != bu.addition_embed_type ||
        cu.block_out_channels.size() != bu.block_out_channels.size() || cu.in_channels != bu.in_channels ||
        cu.block_out_channels != bu.block_out_channels || cu.layers_per_block != bu.layers_per_block)
      fail(kWhere, path + ": this ControlNet is for " + name(cfg->family) + " (cross-attention " +
                       s(cu.cross_attention_dim) + ", " + s(cu.block_out_channels.size()) +
                       " levels), the model is " + name(base_family) + " (cross-attention " +
                       s(bu.cross_attention_dim) + ", " + s(bu.block_out_channels.size()) + " levels)");
    if (!cu.addition_embed_type.empty() &&
        (cu.projection_class_embeddings_input_dim != bu.projection_class_embeddings_input_dim))
      fail(kWhere, path + ": SDXL added conditioning of " + s(cu.projection_class_embeddings_input_dim) +
                       " inputs, the model's UNet has " + s(bu.projection_class_embeddings_input_dim));
    if (from_shapes) {
      cfg->family = base_family;
      set_heads(cfg->unet, base_family);
      if (base->is_sdxl()) cfg->unet.addition_time_embed_dim = bu.addition_time_embed_dim;
    }
  }
  // lllyasviel files keep global average pooling (the v1.1 shuffle model) in the .yaml beside them.
  if (!fs::is_directory(path, ec)) {
    std::ifstream yaml(fs::path(path).replace_extension(".yaml"));
    std::string line;
    while (yaml && std::getline(yaml, line))
      if (line.find("global_average_pooling") != std::string::npos && line.find("True") != std::string::npos)
        cfg->global_pool_conditions = true;
  }
  ControlNetModel m;
  m.load(w, *cfg);
  // Weights the model does not use mean a layout it does not implement (class embeddings, encoder_hid_proj,
  // ...): refused rather than silently ignored.
  if (auto unused = w.unused(); !unused.empty())
    fail(kWhere, path + ": " + s(unused.size()) + " tensor(s) this ControlNet layout does not use, e.g. '" +
                     unused[0] + "'");
  return m;
}

}  // namespace easel
