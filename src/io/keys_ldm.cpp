#include "io/keys_ldm.h"

#include <map>
#include <set>
#include <utility>

namespace easel::keys {
namespace {

std::string s(int i) { return std::to_string(i); }

bool is_cross_attn(const std::string& block_type) { return block_type.rfind("CrossAttn", 0) == 0; }

// Renames the module part (everything before the last '.') of `suffix` through `pairs`.
std::string rename_module(const std::string& suffix, const std::vector<std::pair<std::string, std::string>>& pairs) {
  for (auto& [from, to] : pairs)
    if (suffix.size() > from.size() && suffix.compare(0, from.size(), from) == 0 && suffix[from.size()] == '.' &&
        suffix.find('.', from.size() + 1) == std::string::npos) {
      const std::string param = suffix.substr(from.size() + 1);
      return param == "weight" || param == "bias" ? to + "." + param : "";
    }
  return "";
}

bool is_param(const std::string& s) { return s == "weight" || s == "bias"; }

// "transformer_blocks.<n>.<module>.<weight|bias>" or "norm|proj_in|proj_out.<weight|bias>".
bool is_transformer_suffix(const std::string& suffix) {
  static const std::vector<std::string> top = {"norm.", "proj_in.", "proj_out."};
  for (auto& t : top)
    if (suffix.compare(0, t.size(), t) == 0) return is_param(suffix.substr(t.size()));
  const std::string tb = "transformer_blocks.";
  if (suffix.compare(0, tb.size(), tb) != 0) return false;
  size_t dot = suffix.find('.', tb.size());
  if (dot == std::string::npos || dot == tb.size() ||
      suffix.substr(tb.size(), dot - tb.size()).find_first_not_of("0123456789") != std::string::npos)
    return false;
  const std::string rest = suffix.substr(dot + 1);
  static const std::set<std::string> ok = {
      "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias",
      "attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight", "attn1.to_out.0.weight", "attn1.to_out.0.bias",
      "attn2.to_q.weight", "attn2.to_k.weight", "attn2.to_v.weight", "attn2.to_out.0.weight", "attn2.to_out.0.bias",
      "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight", "ff.net.2.bias"};
  return ok.count(rest) != 0;
}

}  // namespace

std::string rename_suffix(Rule rule, const std::string& suffix) {
  static const std::vector<std::pair<std::string, std::string>> unet_resnet = {
      {"in_layers.0", "norm1"},      {"in_layers.2", "conv1"},  {"emb_layers.1", "time_emb_proj"},
      {"out_layers.0", "norm2"},     {"out_layers.3", "conv2"}, {"skip_connection", "conv_shortcut"}};
  static const std::vector<std::pair<std::string, std::string>> vae_resnet = {
      {"norm1", "norm1"}, {"conv1", "conv1"}, {"norm2", "norm2"}, {"conv2", "conv2"}, {"nin_shortcut", "conv_shortcut"}};
  static const std::vector<std::pair<std::string, std::string>> vae_attn = {
      {"norm", "group_norm"}, {"q", "to_q"}, {"k", "to_k"}, {"v", "to_v"}, {"proj_out", "to_out.0"}};
  switch (rule) {
    case Rule::Same: return is_param(suffix) ? suffix : "";
    case Rule::UNetAttention: return is_transformer_suffix(suffix) ? suffix : "";
    case Rule::UNetResnet: return rename_module(suffix, unet_resnet);
    case Rule::VAEResnet: return rename_module(suffix, vae_resnet);
    case Rule::VAEAttention: return rename_module(suffix, vae_attn);
  }
  return "";
}

std::vector<PrefixMap> ldm_unet_table(const UNetConfig& c) {
  const int n = (int)c.block_out_channels.size();
  const int L = c.layers_per_block;
  std::vector<PrefixMap> t = {
      {"time_embed.0.", "time_embedding.linear_1.", Rule::Same},
      {"time_embed.2.", "time_embedding.linear_2.", Rule::Same},
      {"input_blocks.0.0.", "conv_in.", Rule::Same},
      {"out.0.", "conv_norm_out.", Rule::Same},
      {"out.2.", "conv_out.", Rule::Same},
      {"middle_block.0.", "mid_block.resnets.0.", Rule::UNetResnet},
      {"middle_block.1.", "mid_block.attentions.0.", Rule::UNetAttention},
      {"middle_block.2.", "mid_block.resnets.1.", Rule::UNetResnet},
  };
  if (c.addition_embed_type == "text_time") {  // SDXL: the added-conditioning MLP (label_emb.0.1 is its SiLU)
    t.push_back({"label_emb.0.0.", "add_embedding.linear_1.", Rule::Same});
    t.push_back({"label_emb.0.2.", "add_embedding.linear_2.", Rule::Same});
  }
  for (int i = 0; i < n; i++) {
    // Down level i: input_blocks 1 + (L+1)*i + j hold resnet j (.0) and its attention (.1);
    // input_blocks (L+1)*(i+1) holds the downsampler (.0.op) of levels before the last.
    for (int j = 0; j < L; j++) {
      int b = (L + 1) * i + j + 1;
      t.push_back({"input_blocks." + s(b) + ".0.", "down_blocks." + s(i) + ".resnets." + s(j) + ".", Rule::UNetResnet});
      if (is_cross_attn(c.down_block_types.at(i)))
        t.push_back({"input_blocks." + s(b) + ".1.", "down_blocks." + s(i) + ".attentions." + s(j) + ".", Rule::UNetAttention});
    }
    if (i < n - 1)
      t.push_back({"input_blocks." + s((L + 1) * (i + 1)) + ".0.op.", "down_blocks." + s(i) + ".downsamplers.0.conv.",
                   Rule::Same});
    // Up block i (level n-1-i): output_blocks (L+1)*i + j, j = 0..L, hold resnet j (.0) and
    // attention (.1); the last one also holds the upsampler, at .2 after an attention, else .1.
    const bool attn = is_cross_attn(c.up_block_types.at(i));
    for (int j = 0; j <= L; j++) {
      int b = (L + 1) * i + j;
      t.push_back({"output_blocks." + s(b) + ".0.", "up_blocks." + s(i) + ".resnets." + s(j) + ".", Rule::UNetResnet});
      if (attn)
        t.push_back({"output_blocks." + s(b) + ".1.", "up_blocks." + s(i) + ".attentions." + s(j) + ".", Rule::UNetAttention});
    }
    if (i < n - 1)
      t.push_back({"output_blocks." + s((L + 1) * i + L) + (attn ? ".2.conv." : ".1.conv."),
                   "up_blocks." + s(i) + ".upsamplers.0.conv.", Rule::Same});
  }
  return t;
}

std::vector<PrefixMap> ldm_vae_table(const VAEConfig& c) {
  const int n = (int)c.block_out_channels.size();
  const int L = c.layers_per_block;
  std::vector<PrefixMap> t = {
      {"encoder.conv_in.", "encoder.conv_in.", Rule::Same},
      {"encoder.norm_out.", "encoder.conv_norm_out.", Rule::Same},
      {"encoder.conv_out.", "encoder.conv_out.", Rule::Same},
      {"encoder.mid.block_1.", "encoder.mid_block.resnets.0.", Rule::VAEResnet},
      {"encoder.mid.attn_1.", "encoder.mid_block.attentions.0.", Rule::VAEAttention},
      {"encoder.mid.block_2.", "encoder.mid_block.resnets.1.", Rule::VAEResnet},
      {"decoder.conv_in.", "decoder.conv_in.", Rule::Same},
      {"decoder.norm_out.", "decoder.conv_norm_out.", Rule::Same},
      {"decoder.conv_out.", "decoder.conv_out.", Rule::Same},
      {"decoder.mid.block_1.", "decoder.mid_block.resnets.0.", Rule::VAEResnet},
      {"decoder.mid.attn_1.", "decoder.mid_block.attentions.0.", Rule::VAEAttention},
      {"decoder.mid.block_2.", "decoder.mid_block.resnets.1.", Rule::VAEResnet},
      {"quant_conv.", "quant_conv.", Rule::Same},
      {"post_quant_conv.", "post_quant_conv.", Rule::Same},
  };
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < L; j++)
      t.push_back({"encoder.down." + s(i) + ".block." + s(j) + ".", "encoder.down_blocks." + s(i) + ".resnets." + s(j) + ".",
                   Rule::VAEResnet});
    if (i < n - 1)
      t.push_back({"encoder.down." + s(i) + ".downsample.conv.", "encoder.down_blocks." + s(i) + ".downsamplers.0.conv.",
                   Rule::Same});
    // The LDM decoder numbers its levels from the bottom: up.{n-1-i} is diffusers' up_blocks.i.
    const int u = n - 1 - i;
    for (int j = 0; j <= L; j++)
      t.push_back({"decoder.up." + s(u) + ".block." + s(j) + ".", "decoder.up_blocks." + s(i) + ".resnets." + s(j) + ".",
                   Rule::VAEResnet});
    if (i < n - 1)
      t.push_back({"decoder.up." + s(u) + ".upsample.conv.", "decoder.up_blocks." + s(i) + ".upsamplers.0.conv.",
                   Rule::Same});
  }
  return t;
}

WeightStore apply_table(const WeightStore& src, const std::vector<PrefixMap>& table, std::vector<std::string>& unknown,
                        const std::string& report_prefix) {
  std::map<std::string, const PrefixMap*> by_prefix;
  for (auto& e : table) by_prefix[e.from] = &e;
  WeightStore out;
  out.source = src.source;
  out.metadata = src.metadata;
  for (auto& [key, tensor] : src.tensors) {
    // Longest prefix first: try every cut after a '.', from the right.
    const PrefixMap* hit = nullptr;
    size_t cut = key.size();
    while (!hit && (cut = key.rfind('.', cut - 1)) != std::string::npos && cut > 0) {
      auto it = by_prefix.find(key.substr(0, cut + 1));
      if (it != by_prefix.end()) hit = it->second;
    }
    std::string suffix = hit ? rename_suffix(hit->rule, key.substr(hit->from.size())) : "";
    if (suffix.empty()) {
      unknown.push_back(report_prefix + key);
      continue;
    }
    Tensor t = tensor;
    // LDM VAE attention q/k/v/proj_out are 1x1 convs: [C, C, 1, 1] (or [C, C, 1]) -> Linear [C, C].
    if (hit->rule == Rule::VAEAttention && t.dim() > 2 && suffix.size() > 7 &&
        suffix.compare(suffix.size() - 7, 7, ".weight") == 0 && suffix.rfind("group_norm", 0) != 0)
      t = t.reshape({t.size(0), t.size(1)});
    out.tensors[hit->to + suffix] = t;
  }
  return out;
}

}  // namespace easel::keys
