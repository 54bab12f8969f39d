#include "io/diffusers_folder.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "io/checkpoint.h"
#include "io/detect.h"
#include "io/json_file.h"

namespace easel {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* kWhere = "diffusers";

json read_json(const std::string& file) { return read_json_object(file, kWhere); }

[[noreturn]] void bad_field(const std::string& file, const std::string& name, const char* expected, const json& v) {
  fail(kWhere, file + ": field '" + name + "' should be " + expected + ", got " + v.dump());
}

// Reads j[name] into `out` when present and not null; type errors name the file and field.
void get(const json& j, const std::string& file, const std::string& name, int& out) {
  if (!j.contains(name) || j[name].is_null()) return;
  const json& v = j[name];
  if (!v.is_number_integer()) bad_field(file, name, "an integer", v);
  out = v.get<int>();
}
void get(const json& j, const std::string& file, const std::string& name, float& out) {
  if (!j.contains(name) || j[name].is_null()) return;
  const json& v = j[name];
  if (!v.is_number()) bad_field(file, name, "a number", v);
  out = v.get<float>();
}
void get(const json& j, const std::string& file, const std::string& name, bool& out) {
  if (!j.contains(name) || j[name].is_null()) return;
  const json& v = j[name];
  if (!v.is_boolean()) bad_field(file, name, "true or false", v);
  out = v.get<bool>();
}
void get(const json& j, const std::string& file, const std::string& name, std::string& out) {
  if (!j.contains(name) || j[name].is_null()) return;
  const json& v = j[name];
  if (!v.is_string()) bad_field(file, name, "a string", v);
  out = v.get<std::string>();
}
void get(const json& j, const std::string& file, const std::string& name, std::vector<std::string>& out) {
  if (!j.contains(name) || j[name].is_null()) return;
  const json& v = j[name];
  if (!v.is_array()) bad_field(file, name, "a list of strings", v);
  out.clear();
  for (auto& e : v) {
    if (!e.is_string()) bad_field(file, name, "a list of strings", v);
    out.push_back(e.get<std::string>());
  }
}
// An int list, or a single int repeated `n` times (diffusers accepts both).
void get_int_list(const json& j, const std::string& file, const std::string& name, size_t n, std::vector<int>& out) {
  if (!j.contains(name) || j[name].is_null()) return;
  const json& v = j[name];
  if (v.is_number_integer()) {
    out.assign(n, v.get<int>());
    return;
  }
  if (!v.is_array()) bad_field(file, name, "an integer or a list of integers", v);
  out.clear();
  for (auto& e : v) {
    if (!e.is_number_integer()) bad_field(file, name, "an integer or a list of integers", v);
    out.push_back(e.get<int>());
  }
  if (out.size() != n)
    fail(kWhere, file + ": field '" + name + "' has " + std::to_string(out.size()) + " entries, expected " +
                     std::to_string(n) + " (one per block)");
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// Merges the tensors of `from` into `into`.
void merge(WeightStore& into, WeightStore&& from) {
  for (auto& [k, t] : from.tensors) into.tensors[k] = t;
  for (auto& [k, v] : from.metadata) into.metadata[k] = v;
}

WeightStore load_sharded(const fs::path& index_file) {
  const std::string file = index_file.string();
  json j = read_json(file);
  if (!j.contains("weight_map") || !j["weight_map"].is_object())
    fail(kWhere, file + ": field 'weight_map' is missing or not an object");
  std::set<std::string> shards;
  for (auto& [key, v] : j["weight_map"].items()) {
    if (!v.is_string()) bad_field(file, "weight_map." + key, "a file name", v);
    shards.insert(v.get<std::string>());
  }
  WeightStore out;
  out.source = file;
  for (auto& shard : shards) merge(out, load_weights((index_file.parent_path() / shard).string()));
  for (auto& [key, v] : j["weight_map"].items())
    if (!out.has(key)) fail(kWhere, file + ": tensor '" + key + "' listed in weight_map is not in " + v.get<std::string>());
  return out;
}

// Older diffusers VAE attention names (query/key/value/proj_attn) -> current ones.
WeightStore modernise_vae_names(const WeightStore& v) {
  static const std::vector<std::pair<std::string, std::string>> renames = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  WeightStore out;
  out.source = v.source;
  out.metadata = v.metadata;
  for (auto& [k, t] : v.tensors) {
    std::string key = k;
    if (key.find(".attentions.") != std::string::npos)
      for (auto& [from, to] : renames) {
        size_t p = key.find(from);
        if (p != std::string::npos) key = key.substr(0, p) + to + key.substr(p + from.size());
      }
    out.tensors[key] = t;
  }
  return out;
}

// "text_model.X" -> "X" (transformers 4 saves the level, transformers 5 does not).
WeightStore strip_text_model(const WeightStore& te) {
  WeightStore out;
  out.source = te.source;
  out.metadata = te.metadata;
  const std::string p = "text_model.";
  for (auto& [k, t] : te.tensors) {
    std::string key = k.compare(0, p.size(), p) == 0 ? k.substr(p.size()) : k;
    if (key == "embeddings.position_ids") continue;  // a buffer, not a weight
    out.tensors[key] = t;
  }
  return out;
}

// Pad token id from tokenizer_config.json / special_tokens_map.json ("!" for SD2 = id 0).
int read_pad_token_id(const fs::path& tok_dir, int fallback) {
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    fs::path f = tok_dir / name;
    if (!path_exists(f)) continue;
    json j = read_json(f.string());
    if (!j.contains("pad_token") || j["pad_token"].is_null()) continue;
    const json& p = j["pad_token"];
    std::string tok = p.is_string() ? p.get<std::string>()
                    : p.is_object() && p.contains("content") && p["content"].is_string() ? p["content"].get<std::string>()
                                                                                          : "";
    if (tok.empty()) bad_field(f.string(), "pad_token", "a token string", p);
    fs::path vocab = tok_dir / "vocab.json";
    if (path_exists(vocab)) {
      json v = read_json(vocab.string());
      if (v.contains(tok) && v[tok].is_number_integer()) return v[tok].get<int>();
    }
    if (tok == "<|endoftext|>") return 49407;
    if (tok == "!") return 0;
    fail(kWhere, f.string() + ": pad_token '" + tok + "' is not in the vocabulary");
  }
  return fallback;
}

}  // namespace

bool is_diffusers_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && path_exists(fs::path(path) / "model_index.json");
}

UNetConfig parse_unet_config(const std::string& file) {
  json j = read_json(file);
  UNetConfig c;
  for (const char* unsupported : {"class_embed_type", "encoder_hid_dim_type", "time_cond_proj_dim"})
    if (j.contains(unsupported) && !j[unsupported].is_null())
      fail(kWhere, file + ": field '" + std::string(unsupported) + "' = " + j[unsupported].dump() +
                       " is not supported (only SD1.x/SD2.x/SDXL UNets)");
  get(j, file, "addition_embed_type", c.addition_embed_type);
  if (!c.addition_embed_type.empty()) {
    if (c.addition_embed_type != "text_time")
      fail(kWhere, file + ": field 'addition_embed_type' = '" + c.addition_embed_type +
                       "' is not supported (only SDXL's \"text_time\")");
    get(j, file, "addition_time_embed_dim", c.addition_time_embed_dim);
    get(j, file, "projection_class_embeddings_input_dim", c.projection_class_embeddings_input_dim);
    if (c.addition_time_embed_dim < 1 || c.projection_class_embeddings_input_dim < 1)
      fail(kWhere, file + ": addition_embed_type \"text_time\" needs addition_time_embed_dim and "
                          "projection_class_embeddings_input_dim");
  }
  if (j.contains("reverse_transformer_layers_per_block") && !j["reverse_transformer_layers_per_block"].is_null())
    fail(kWhere, file + ": field 'reverse_transformer_layers_per_block' is not supported");
  get(j, file, "in_channels", c.in_channels);
  get(j, file, "out_channels", c.out_channels);
  get(j, file, "sample_size", c.sample_size);
  if (j.contains("block_out_channels")) {
    c.block_out_channels.clear();
    get_int_list(j, file, "block_out_channels", j["block_out_channels"].is_array() ? j["block_out_channels"].size() : 0,
                 c.block_out_channels);
  }
  const size_t n = c.block_out_channels.size();
  if (n == 0) fail(kWhere, file + ": field 'block_out_channels' is empty");
  get(j, file, "down_block_types", c.down_block_types);
  get(j, file, "up_block_types", c.up_block_types);
  if (c.down_block_types.size() != n || c.up_block_types.size() != n)
    fail(kWhere, file + ": down_block_types/up_block_types need " + std::to_string(n) + " entries (block_out_channels)");
  for (auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D") fail(kWhere, file + ": unsupported down block type '" + t + "'");
  for (auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") fail(kWhere, file + ": unsupported up block type '" + t + "'");
  get(j, file, "layers_per_block", c.layers_per_block);
  c.attention_head_dim.assign(n, 8);
  get_int_list(j, file, "attention_head_dim", n, c.attention_head_dim);
  c.num_attention_heads.clear();
  get_int_list(j, file, "num_attention_heads", n, c.num_attention_heads);
  c.transformer_layers_per_block.assign(n, 1);
  get_int_list(j, file, "transformer_layers_per_block", n, c.transformer_layers_per_block);
  get(j, file, "cross_attention_dim", c.cross_attention_dim);
  get(j, file, "use_linear_projection", c.use_linear_projection);
  get(j, file, "norm_num_groups", c.norm_num_groups);
  get(j, file, "norm_eps", c.norm_eps);
  get(j, file, "flip_sin_to_cos", c.flip_sin_to_cos);
  get(j, file, "freq_shift", c.freq_shift);
  if (c.layers_per_block < 1) fail(kWhere, file + ": field 'layers_per_block' must be >= 1");
  return c;
}

VAEConfig parse_vae_config(const std::string& file) {
  json j = read_json(file);
  VAEConfig c;
  get(j, file, "in_channels", c.in_channels);
  get(j, file, "out_channels", c.out_channels);
  get(j, file, "latent_channels", c.latent_channels);
  if (j.contains("block_out_channels")) {
    const json& b = j["block_out_channels"];
    get_int_list(j, file, "block_out_channels", b.is_array() ? b.size() : 0, c.block_out_channels);
  }
  if (c.block_out_channels.empty()) fail(kWhere, file + ": field 'block_out_channels' is empty");
  get(j, file, "layers_per_block", c.layers_per_block);
  get(j, file, "norm_num_groups", c.norm_num_groups);
  get(j, file, "scaling_factor", c.scaling_factor);
  get(j, file, "force_upcast", c.force_upcast);
  return c;
}

TextEncoderConfig parse_text_encoder_config(const std::string& file) {
  json root = read_json(file);
  const json& j = root.contains("text_config") && root["text_config"].is_object() ? root["text_config"] : root;
  TextEncoderConfig c;
  get(j, file, "vocab_size", c.vocab_size);
  get(j, file, "hidden_size", c.hidden_size);
  get(j, file, "intermediate_size", c.intermediate_size);
  get(j, file, "num_hidden_layers", c.num_hidden_layers);
  get(j, file, "num_attention_heads", c.num_attention_heads);
  get(j, file, "max_position_embeddings", c.max_position_embeddings);
  get(j, file, "hidden_act", c.hidden_act);
  get(j, file, "layer_norm_eps", c.layer_norm_eps);
  c.projection_dim = 0;  // CLIPTextModel has no projection (text_encoder_2's is read by the folder loader)
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    fail(kWhere, file + ": field 'hidden_act' = '" + c.hidden_act + "' is not supported (quick_gelu or gelu)");
  if (c.num_attention_heads < 1 || c.hidden_size % c.num_attention_heads != 0)
    fail(kWhere, file + ": hidden_size " + std::to_string(c.hidden_size) + " is not divisible by num_attention_heads " +
                     std::to_string(c.num_attention_heads));
  return c;
}

SchedulerConfig parse_scheduler_config(const std::string& file) {
  json j = read_json(file);
  SchedulerConfig c;
  get(j, file, "num_train_timesteps", c.num_train_timesteps);
  get(j, file, "beta_start", c.beta_start);
  get(j, file, "beta_end", c.beta_end);
  get(j, file, "beta_schedule", c.beta_schedule);
  get(j, file, "prediction_type", c.prediction_type);
  get(j, file, "timestep_spacing", c.timestep_spacing);
  get(j, file, "steps_offset", c.steps_offset);
  get(j, file, "set_alpha_to_one", c.set_alpha_to_one);
  get(j, file, "clip_sample", c.clip_sample);
  get(j, file, "interpolation_type", c.interpolation_type);
  get(j, file, "use_karras_sigmas", c.use_karras_sigmas);
  get(j, file, "final_sigmas_type", c.final_sigmas_type);
  get(j, file, "lower_order_final", c.lower_order_final);
  get(j, file, "euler_at_final", c.euler_at_final);
  if (c.prediction_type != "epsilon" && c.prediction_type != "v_prediction")
    fail(kWhere, file + ": field 'prediction_type' = '" + c.prediction_type + "' is not supported (epsilon or v_prediction)");
  return c;
}

WeightStore load_part_weights(const std::string& dir, const std::vector<std::string>& stems) {
  const fs::path d(dir);
  for (const char* variant : {"", ".fp16"})
    for (auto& stem : stems)
      for (const char* ext : {".safetensors", ".bin"}) {
        fs::path f = d / (stem + variant + ext);
        if (path_exists(f)) return load_weights(f.string());
        fs::path idx = d / (stem + variant + ext + ".index.json");
        if (path_exists(idx)) return load_sharded(idx);
      }
  std::string names;
  for (auto& stem : stems) names += (names.empty() ? "" : ", ") + stem + ".safetensors";
  fail(kWhere, dir + ": no weights file (" + names + ", .bin or a sharded .index.json)");
}

namespace {

// True when model_index.json names a component ("text_encoder": ["transformers", "CLIPTextModel"]);
// false for [null, null] or when absent.
bool index_has(const json& index, const std::string& name) {
  if (!index.contains(name)) return false;
  const json& v = index[name];
  return v.is_array() && !v.empty() && !v[0].is_null();
}

// SDXL parts of a StableDiffusionXL(Img2Img)Pipeline folder: text_encoder_2 (+ projection),
// tokenizer_2, the model_index.json flags, and consistency checks of the added conditioning.
void load_sdxl_parts(const fs::path& d, const json& index, const std::string& index_file, Checkpoint& ck,
                     const std::function<fs::path(const std::string&)>& part_dir) {
  ModelConfig& c = ck.config;
  const fs::path te2 = part_dir("text_encoder_2");
  const std::string te2_cfg = (te2 / "config.json").string();
  c.text_2 = parse_text_encoder_config(te2_cfg);
  ck.text_encoder_2 = strip_text_model(load_part_weights(te2.string(), {"model", "pytorch_model"}));
  {
    json j = read_json(te2_cfg);
    const json& t = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : j;
    get(t, te2_cfg, "projection_dim", c.text_2.projection_dim);
    auto it = ck.text_encoder_2.tensors.find("text_projection.weight");
    if (it == ck.text_encoder_2.tensors.end())
      fail(kWhere, te2.string() + ": text_encoder_2 weights have no 'text_projection.weight' (SDXL needs "
                                  "CLIPTextModelWithProjection for the pooled text embedding)");
    const Shape expect = {c.text_2.projection_dim, c.text_2.hidden_size};
    if (it->second.shape() != expect)
      fail(kWhere, te2.string() + ": text_projection.weight has shape " + shape_str(it->second.shape()) + ", expected " +
                       shape_str(expect) + " (projection_dim, hidden_size of config.json)");
  }
  const fs::path tok2 = d / "tokenizer_2";
  ck.tokenizer_2_dir = path_exists(tok2 / "vocab.json") && path_exists(tok2 / "merges.txt") ? tok2.string() : "";
  c.pad_token_id_2 = read_pad_token_id(tok2, 0);

  // StableDiffusionXL(Img2Img)Pipeline.__init__ defaults: force_zeros true, aesthetics false.
  c.force_zeros_for_empty_prompt = true;
  c.requires_aesthetics_score = false;
  get(index, index_file, "force_zeros_for_empty_prompt", c.force_zeros_for_empty_prompt);
  get(index, index_file, "requires_aesthetics_score", c.requires_aesthetics_score);

  const UNetConfig& u = c.unet;
  const std::string unet_cfg = (d / "unet" / "config.json").string();
  if (u.addition_embed_type != "text_time")
    fail(kWhere, unet_cfg + ": an SDXL UNet needs addition_embed_type \"text_time\"");
  // diffusers' _get_add_time_ids: 6 ids (base) or 5 with requires_aesthetics_score (refiner).
  const int n_ids = c.requires_aesthetics_score ? 5 : 6;
  const int expect = c.text_2.projection_dim + n_ids * u.addition_time_embed_dim;
  if (u.projection_class_embeddings_input_dim != expect)
    fail(kWhere, unet_cfg + ": inconsistent pooled dims: projection_class_embeddings_input_dim " +
                     std::to_string(u.projection_class_embeddings_input_dim) + " != text_encoder_2 projection_dim " +
                     std::to_string(c.text_2.projection_dim) + " + " + std::to_string(n_ids) + " x addition_time_embed_dim " +
                     std::to_string(u.addition_time_embed_dim) + " (requires_aesthetics_score " +
                     (c.requires_aesthetics_score ? "true" : "false") + ")");
  const int context = (c.has_text_1() ? c.text.hidden_size : 0) + c.text_2.hidden_size;
  if (u.cross_attention_dim != context)
    fail(kWhere, unet_cfg + ": cross_attention_dim " + std::to_string(u.cross_attention_dim) +
                     " does not match the text encoders' hidden sizes (" +
                     (c.has_text_1() ? std::to_string(c.text.hidden_size) + " + " : std::string()) +
                     std::to_string(c.text_2.hidden_size) + ")");
}

}  // namespace

void load_diffusers_folder(const std::string& dir, Checkpoint& ck) {
  const fs::path d(dir);
  const std::string index_file = (d / "model_index.json").string();
  json index = read_json(index_file);
  if (!index.contains("_class_name") || !index["_class_name"].is_string())
    fail(kWhere, index_file + ": field '_class_name' is missing (not a diffusers pipeline folder)");
  const std::string cls = index["_class_name"].get<std::string>();
  const bool xl = cls == "StableDiffusionXLPipeline" || cls == "StableDiffusionXLImg2ImgPipeline";
  if (!xl && (cls.rfind("StableDiffusionXL", 0) == 0 || cls.rfind("StableDiffusion3", 0) == 0))
    fail(kWhere, index_file + ": _class_name '" + cls +
                     "' is not supported (SD1.x/SD2.x pipelines, StableDiffusionXLPipeline and "
                     "StableDiffusionXLImg2ImgPipeline)");
  if (cls.rfind("StableDiffusion", 0) != 0)
    fail(kWhere, index_file + ": _class_name '" + cls + "' is not a Stable Diffusion pipeline");

  auto part_dir = [&](const std::string& part) {
    fs::path p = d / part;
    std::error_code ec;
    if (!fs::is_directory(p, ec)) fail(kWhere, dir + ": missing part folder '" + part + "/'");
    if (!path_exists(p / "config.json")) fail(kWhere, dir + ": missing " + part + "/config.json");
    return p;
  };
  // The SDXL refiner has no first text encoder (model_index.json: "text_encoder": [null, null]).
  const bool has_te1 = !xl || index_has(index, "text_encoder");
  const fs::path unet = part_dir("unet"), vae = part_dir("vae");

  ModelConfig& c = ck.config;
  c.unet = parse_unet_config((unet / "config.json").string());
  c.vae = parse_vae_config((vae / "config.json").string());
  if (xl) {
    c.family = has_te1 ? "sdxl" : "sdxl_refiner";
    c.scheduler = detect::default_scheduler(c.family, "epsilon");
    // SDXL's vae config.json sample_size (1024) is the tile size diffusers uses. SD1/SD2 keep
    // the default 512 (their configs' values were never read).
    json vj = read_json((vae / "config.json").string());
    get(vj, (vae / "config.json").string(), "sample_size", c.vae.sample_size);
  } else if (!c.unet.addition_embed_type.empty()) {
    fail(kWhere, (unet / "config.json").string() + ": addition_embed_type \"" + c.unet.addition_embed_type +
                     "\" in a " + cls + " folder (only SDXL pipelines use it)");
  }
  fs::path sched = d / "scheduler" / "scheduler_config.json";
  if (path_exists(sched)) c.scheduler = parse_scheduler_config(sched.string());
  ck.unet = load_part_weights(unet.string(), {"diffusion_pytorch_model"});
  ck.vae = modernise_vae_names(load_part_weights(vae.string(), {"diffusion_pytorch_model"}));

  if (has_te1) {
    const fs::path te = part_dir("text_encoder");
    c.text = parse_text_encoder_config((te / "config.json").string());
    ck.text_encoder = strip_text_model(load_part_weights(te.string(), {"model", "pytorch_model"}));
    const fs::path tok = d / "tokenizer";
    ck.tokenizer_dir = path_exists(tok / "vocab.json") && path_exists(tok / "merges.txt") ? tok.string() : "";
    if (!xl) {
      // SD2 = OpenCLIP text encoder (gelu) / 1024-dim cross-attention; SD1 = CLIP-L (quick_gelu).
      c.family = (c.text.hidden_act == "gelu" || c.unet.cross_attention_dim == 1024) ? "sd2" : "sd1";
      if (c.unet.cross_attention_dim != c.text.hidden_size)
        fail(kWhere, dir + ": unet/config.json cross_attention_dim " + std::to_string(c.unet.cross_attention_dim) +
                         " does not match text_encoder/config.json hidden_size " + std::to_string(c.text.hidden_size));
    }
    c.pad_token_id = read_pad_token_id(tok, c.family == "sd2" ? 0 : 49407);
  }
  if (xl) load_sdxl_parts(d, index, index_file, ck, part_dir);
}

}  // namespace easel
