// Control-LoRA: a ControlNet rebuilt from the base UNet + low-rank deltas + full weights.
// References in control_lora.h.
#include "control/control_lora.h"

#include <filesystem>
#include <map>

#include "io/keys_ldm.h"
#include "lora/lora.h"
#include "ops/ops.h"

namespace easel {

namespace {

const char* kWhere = "control_lora";

std::string s(int64_t v) { return std::to_string(v); }

int count_indices(const WeightStore& w, const std::string& prefix) {
  int n = 0;
  for (const auto& [k, t] : w.tensors)
    if (k.rfind(prefix, 0) == 0) {
      const size_t dot = k.find('.', prefix.size());
      try {
        n = std::max(n, std::stoi(k.substr(prefix.size(), dot - prefix.size())) + 1);
      } catch (const std::exception&) {
      }
    }
  return n;
}

// LDM -> diffusers names for the ControlNet: the UNet table (encoder part) plus the hint block,
// zero convs and middle_block_out (as controlnet_from_ldm / diffusers' converter).
std::vector<keys::PrefixMap> control_table(const UNetConfig& cfg, const WeightStore& file) {
  std::vector<keys::PrefixMap> t = keys::ldm_unet_table(cfg);
  const int nh = count_indices(file, "input_hint_block.");
  int last = -1;
  for (int k = 0; k < nh; k++)
    if (file.has("input_hint_block." + s(k) + ".weight")) last = k;
  if (last < 2) fail(kWhere, file.source + ": input_hint_block has no convolutions (truncated file?)");
  t.push_back({"input_hint_block.0.", "controlnet_cond_embedding.conv_in.", keys::Rule::Same});
  for (int k = 2; k < last; k += 2)
    t.push_back({"input_hint_block." + s(k) + ".", "controlnet_cond_embedding.blocks." + s(k / 2 - 1) + ".",
                 keys::Rule::Same});
  t.push_back({"input_hint_block." + s(last) + ".", "controlnet_cond_embedding.conv_out.", keys::Rule::Same});
  const int nz = count_indices(file, "zero_convs.");
  for (int k = 0; k < nz; k++)
    t.push_back({"zero_convs." + s(k) + ".0.", "controlnet_down_blocks." + s(k) + ".", keys::Rule::Same});
  t.push_back({"middle_block_out.0.", "controlnet_mid_block.", keys::Rule::Same});
  return t;
}

// One key through the table (longest prefix, as keys::apply_table); "" when nothing covers it.
std::string map_key(const std::map<std::string, const keys::PrefixMap*>& by_prefix, const std::string& key) {
  size_t cut = key.size();
  while ((cut = key.rfind('.', cut - 1)) != std::string::npos && cut > 0) {
    auto it = by_prefix.find(key.substr(0, cut + 1));
    if (it == by_prefix.end()) continue;
    const std::string suffix = keys::rename_suffix(it->second->rule, key.substr(cut + 1));
    return suffix.empty() ? "" : it->second->to + suffix;
  }
  return "";
}

bool encoder_key(const std::string& k) {
  for (const char* p : {"conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block."})
    if (k.rfind(p, 0) == 0) return true;
  return false;
}

}  // namespace

bool is_control_lora(const WeightStore& w) { return w.has("lora_controlnet"); }

ControlNetModel build_control_lora(const WeightStore& file, const WeightStore& base_unet, const UNetConfig& base_cfg,
                                   const std::string& family, const ControlLoraOptions& opt) {
  const std::string& src = file.source;
  if (!is_control_lora(file))
    fail(kWhere, src + ": not a Control-LoRA (no 'lora_controlnet' marker key)" +
                     std::string(is_controlnet_store(file) ? "; it is a full ControlNet: use kind controlnet" : ""));
  // Family check before anything else: SDXL files carry label_emb (the added-conditioning MLP).
  const bool file_xl = file.has("label_emb.0.0.bias") || file.has("label_emb.0.0.up") ||
                       file.has("label_emb.0.0.weight");
  const bool base_xl = base_cfg.addition_embed_type == "text_time";
  if (file_xl != base_xl)
    fail(kWhere, src + ": this Control-LoRA is for " + (file_xl ? "SDXL" : "SD1/SD2") + ", the model is " +
                     (base_xl ? "SDXL" : "SD1/SD2") + " (" + family + ")");

  const std::vector<keys::PrefixMap> table = control_table(base_cfg, file);
  std::map<std::string, const keys::PrefixMap*> by_prefix;
  for (const auto& e : table) by_prefix[e.from] = &e;

  // Start from the base UNet's encoder (shared tensors).
  WeightStore w;
  w.source = src;
  for (const auto& [k, t] : base_unet.tensors)
    if (encoder_key(k)) w.tensors[k] = t;

  // LoRA pairs first collected by module, full tensors applied directly.
  struct Pair { Tensor up, down; std::string key; };
  std::map<std::string, Pair> pairs;  // diffusers module name -> factors
  std::vector<std::string> lora_modules_bias;  // file biases of LoRA'd layers (for Biases::Diffusers)
  std::map<std::string, Tensor> full;
  for (const auto& [k, t] : file.tensors) {
    if (k == "lora_controlnet" || k.find("__") != std::string::npos) continue;  // marker; ComfyUI skips "__" keys
    const size_t dot = k.rfind('.');
    const std::string param = dot == std::string::npos ? "" : k.substr(dot + 1);
    const std::string module_ldm = dot == std::string::npos ? k : k.substr(0, dot);
    const bool factor = param == "up" || param == "down";
    if (!factor && param != "weight" && param != "bias")
      fail(kWhere, src + ": unexpected key '" + k + "' (expected .weight, .bias, .up or .down)");
    const std::string name = map_key(by_prefix, module_ldm + "." + (factor ? "weight" : param));
    if (name.empty() || !(encoder_key(name) || name.rfind("controlnet_", 0) == 0))  // e.g. output_blocks (decoder)
      fail(kWhere, src + ": key '" + k + "' belongs to no ControlNet layer");
    if (factor) {
      Pair& p = pairs[name.substr(0, name.size() - 7)];  // without ".weight"
      (param == "up" ? p.up : p.down) = t;
      p.key = module_ldm;
    } else {
      full[name] = t;
    }
  }

  for (auto& [module, p] : pairs) {
    if (!p.up.defined() || !p.down.defined())
      fail(kWhere, src + ": '" + p.key + "' has only one of .up / .down");
    const std::string wk = module + ".weight";
    if (full.count(wk)) fail(kWhere, src + ": '" + p.key + "' has both a full weight and LoRA factors");
    if (!w.has(wk)) fail(kWhere, src + ": '" + p.key + "' has LoRA factors but the base UNet has no '" + wk + "'");
    const Tensor& W = w.get(wk);
    const int64_t out = W.size(0), cols = W.numel() / std::max<int64_t>(out, 1);
    const int64_t r = p.down.size(0);
    if (p.up.dim() < 2 || p.up.size(0) != out || p.up.numel() != out * r || p.down.numel() != r * cols)
      fail(kWhere, src + ": '" + p.key + "' factors up " + shape_str(p.up.shape()) + " / down " +
                       shape_str(p.down.shape()) + " do not fit the model weight " + shape_str(W.shape()) +
                       " (a Control-LoRA for another model?)");
    lora::Module m;
    m.kind = lora::Kind::LoRA;
    m.module = module;
    m.shape = W.shape();
    m.rank = (int)r;
    m.scale = 1;  // Control-LoRA: alpha = rank
    m.t["up"] = p.up.to(DType::F32).reshape({out, r});
    m.t["down"] = p.down.to(DType::F32).reshape({r, cols});
    Tensor merged = lora::delta_weight(m, W, 1.0f);  // [W's shape] f32
    ops::add_(merged, W.to(DType::F32));
    w.tensors[wk] = merged;
  }
  for (const auto& [k, t] : full) {
    const std::string module = k.substr(0, k.rfind('.'));
    const bool is_bias = k.size() > 5 && k.compare(k.size() - 5, 5, ".bias") == 0;
    if (is_bias && pairs.count(module) && opt.biases == ControlLoraOptions::Biases::Diffusers) continue;
    if (encoder_key(k) && !w.has(k))
      fail(kWhere, src + ": '" + k + "' is not a weight of the base UNet's encoder");
    if (w.has(k) && w.get(k).shape() != t.shape())
      fail(kWhere, src + ": tensor '" + k + "' has shape " + shape_str(t.shape()) + ", the model's is " +
                       shape_str(w.get(k).shape()) + " (a Control-LoRA for another model?)");
    w.tensors[k] = t;
  }

  // The ControlNet config: the base UNet's encoder (ControlNetModel.from_unet) and the hint block
  // from the file: conv_in [c0, ch, 3, 3], blocks.(2k+1) [c(k+1), c(k), 3, 3].
  ControlNetConfig cfg = controlnet_config_from_unet(base_cfg, family);
  const Tensor& hint_in = w.get("controlnet_cond_embedding.conv_in.weight");
  if (hint_in.dim() != 4) fail(kWhere, src + ": input_hint_block.0.weight should be 4-D");
  cfg.conditioning_channels = (int)hint_in.size(1);
  cfg.conditioning_embedding_out_channels = {(int)hint_in.size(0)};
  for (int k = 1; w.has("controlnet_cond_embedding.blocks." + s(k) + ".weight"); k += 2)
    cfg.conditioning_embedding_out_channels.push_back((int)w.get("controlnet_cond_embedding.blocks." + s(k) + ".weight").size(0));
  ControlNetModel model;
  model.load(w, cfg);
  model.source = src;
  std::vector<std::string> unused;
  for (const std::string& k : w.unused())
    if (!encoder_key(k) || full.count(k)) unused.push_back(k);
  if (!unused.empty()) fail(kWhere, src + ": " + s((int64_t)unused.size()) + " tensor(s) fit no ControlNet layer, e.g. '" +
                                        unused[0] + "'");
  return model;
}

ControlNetModel load_control_lora(const std::string& path, const Checkpoint& base, const ControlLoraOptions& opt) {
  if (!std::filesystem::exists(path)) fail(kWhere, path + ": file not found");
  WeightStore file = load_weights(path);
  file.source = path;
  return build_control_lora(file, base.unet, base.config.unet, base.config.family, opt);
}

}  // namespace easel
