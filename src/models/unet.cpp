// UNet2DConditionModel; see unet.h for the references.
#include "models/unet.h"

#include <algorithm>

namespace easel {

using nn::join;

static bool is_cross_attn_block(const std::string& type, const char* cross, const char* plain) {
  if (type == cross) return true;
  if (type == plain) return false;
  fail("unet", std::string("unsupported block type '") + type + "' (expected " + cross + " or " + plain + ")");
}

// Per-level transformer depth (diffusers allows an int or a list; config.h holds a list).
static int transformer_layers_at(const UNetConfig& cfg, size_t level) {
  const auto& t = cfg.transformer_layers_per_block;
  if (t.empty()) return 1;
  return t.size() == 1 ? t[0] : t.at(level);
}

static void load_transformer(Transformer2DModel& t, const WeightStore& w, const std::string& prefix,
                             const UNetConfig& cfg, size_t level, int64_t channels) {
  int heads = cfg.heads_at(level);
  if (heads <= 0 || channels % heads)
    fail("unet", prefix + ": " + std::to_string(channels) + " channels do not split into " + std::to_string(heads) +
                     " heads");
  t.load(w, prefix, channels, heads, channels / heads, transformer_layers_at(cfg, level), cfg.cross_attention_dim,
         cfg.use_linear_projection, cfg.norm_num_groups);
}

// ---- down block -----------------------------------------------------------------------------
void UNetDownBlock::load(const WeightStore& w, const std::string& prefix, const UNetConfig& cfg, size_t level,
                         int64_t in, int64_t out, int64_t temb_channels) {
  bool attn = is_cross_attn_block(cfg.down_block_types.at(level), "CrossAttnDownBlock2D", "DownBlock2D");
  int n = cfg.layers_per_block;
  resnets.assign(n, {});
  attentions.assign(attn ? n : 0, {});
  for (int i = 0; i < n; i++) {
    resnets[i].load(w, join(prefix, "resnets." + std::to_string(i)), i == 0 ? in : out, out, temb_channels,
                    cfg.norm_num_groups, cfg.norm_eps);
    if (attn) load_transformer(attentions[i], w, join(prefix, "attentions." + std::to_string(i)), cfg, level, out);
  }
  if (level + 1 < cfg.block_out_channels.size()) {
    downsampler.emplace();
    downsampler->load(w, join(prefix, "downsamplers.0"), out, /*vae_padding=*/false);
  } else {
    downsampler.reset();
  }
}

Tensor UNetDownBlock::forward(Tensor x, const Tensor& temb_act, const Tensor& context, std::vector<Tensor>& skips,
                              const Tensor* intrablock, const UNetTrace* trace, const std::string& name) const {
  for (size_t i = 0; i < resnets.size(); i++) {
    x = resnets[i](x, temb_act);
    if (trace) (*trace)(name + ".resnets." + std::to_string(i), x);
    if (!attentions.empty()) {
      x = attentions[i](x, context);
      if (trace) (*trace)(name + ".attentions." + std::to_string(i), x);
    }
    // CrossAttnDownBlock2D adds the adapter feature after its last resnet/attention pair.
    if (intrablock && !attentions.empty() && i + 1 == resnets.size()) x = ops::add(x, *intrablock);
    skips.push_back(x);
  }
  if (downsampler) {
    x = (*downsampler)(x);
    if (trace) (*trace)(name + ".downsamplers.0", x);
    skips.push_back(x);
  }
  // DownBlock2D: diffusers adds it to the block output in place (`sample += r`), which also
  // changes the last skip (the same tensor).
  if (intrablock && attentions.empty()) {
    x = ops::add(x, *intrablock);
    skips.back() = x;
  }
  if (trace) (*trace)(name, x);
  return x;
}

// ---- mid block ------------------------------------------------------------------------------
void UNetMidBlock::load(const WeightStore& w, const std::string& prefix, const UNetConfig& cfg, int64_t channels,
                        int64_t temb_channels) {
  size_t last = cfg.block_out_channels.size() - 1;
  int n = 1;  // UNetMidBlock2DCrossAttn num_layers
  resnets.assign(n + 1, {});
  attentions.assign(n, {});
  for (int i = 0; i <= n; i++)
    resnets[i].load(w, join(prefix, "resnets." + std::to_string(i)), channels, channels, temb_channels,
                    cfg.norm_num_groups, cfg.norm_eps);
  for (int i = 0; i < n; i++)
    load_transformer(attentions[i], w, join(prefix, "attentions." + std::to_string(i)), cfg, last, channels);
}

Tensor UNetMidBlock::forward(Tensor x, const Tensor& temb_act, const Tensor& context, const UNetTrace* trace,
                             const std::string& name) const {
  x = resnets[0](x, temb_act);
  if (trace) (*trace)(name + ".resnets.0", x);
  for (size_t i = 0; i < attentions.size(); i++) {
    x = attentions[i](x, context);
    if (trace) (*trace)(name + ".attentions." + std::to_string(i), x);
    x = resnets[i + 1](x, temb_act);
    if (trace) (*trace)(name + ".resnets." + std::to_string(i + 1), x);
  }
  if (trace) (*trace)(name, x);
  return x;
}

// ---- up block -------------------------------------------------------------------------------
void UNetUpBlock::load(const WeightStore& w, const std::string& prefix, const UNetConfig& cfg, size_t level,
                       int64_t in, int64_t out, int64_t prev_out, int64_t temb_channels, bool add_upsample) {
  // `level` indexes the up-block type list; per-level attention settings come from the mirrored
  // down level (diffusers reverses num_attention_heads / transformer_layers_per_block).
  size_t down_level = cfg.block_out_channels.size() - 1 - level;
  bool attn = is_cross_attn_block(cfg.up_block_types.at(level), "CrossAttnUpBlock2D", "UpBlock2D");
  int n = cfg.layers_per_block + 1;
  resnets.assign(n, {});
  attentions.assign(attn ? n : 0, {});
  for (int i = 0; i < n; i++) {
    int64_t skip_ch = i == n - 1 ? in : out;
    int64_t res_in = i == 0 ? prev_out : out;
    resnets[i].load(w, join(prefix, "resnets." + std::to_string(i)), res_in + skip_ch, out, temb_channels,
                    cfg.norm_num_groups, cfg.norm_eps);
    if (attn)
      load_transformer(attentions[i], w, join(prefix, "attentions." + std::to_string(i)), cfg, down_level, out);
  }
  if (add_upsample) {
    upsampler.emplace();
    upsampler->load(w, join(prefix, "upsamplers.0"), out);
  } else {
    upsampler.reset();
  }
}

Tensor UNetUpBlock::forward(Tensor x, const Tensor& temb_act, const Tensor& context, std::vector<Tensor>& skips,
                            const UNetTrace* trace, const std::string& name) const {
  for (size_t i = 0; i < resnets.size(); i++) {
    if (skips.empty()) fail("unet", name + ": ran out of skip connections");
    Tensor cat = ops::concat({x, skips.back()}, 1);  // [B, C + C_skip, H, W]
    skips.pop_back();
    x = Tensor();
    x = resnets[i](cat, temb_act);
    cat = Tensor();
    if (trace) (*trace)(name + ".resnets." + std::to_string(i), x);
    if (!attentions.empty()) {
      x = attentions[i](x, context);
      if (trace) (*trace)(name + ".attentions." + std::to_string(i), x);
    }
  }
  if (upsampler) {
    x = (*upsampler)(x);
    if (trace) (*trace)(name + ".upsamplers.0", x);
  }
  if (trace) (*trace)(name, x);
  return x;
}

// ---- UNet2DConditionModel -------------------------------------------------------------------
void UNet2DConditionModel::load(const WeightStore& w, const UNetConfig& cfg) {
  config = cfg;
  const auto& ch = cfg.block_out_channels;
  size_t levels = ch.size();
  if (levels == 0 || cfg.down_block_types.size() != levels || cfg.up_block_types.size() != levels)
    fail("unet", w.source + ": block_out_channels, down_block_types and up_block_types lengths differ");
  if (cfg.num_attention_heads.empty() ? cfg.attention_head_dim.size() != levels : cfg.num_attention_heads.size() != levels)
    fail("unet", w.source + ": need one attention head count per level");
  int64_t c0 = ch[0], temb = 4 * c0;

  time_embedding.load(w, "time_embedding", c0, temb);
  if (cfg.addition_embed_type == "text_time") {
    if (cfg.addition_time_embed_dim <= 0 || cfg.projection_class_embeddings_input_dim <= 0)
      fail("unet", w.source + ": addition_embed_type \"text_time\" needs addition_time_embed_dim and "
                              "projection_class_embeddings_input_dim");
    add_embedding.emplace();
    add_embedding->load(w, "add_embedding", cfg.projection_class_embeddings_input_dim, temb);
  } else if (cfg.addition_embed_type.empty()) {
    add_embedding.reset();
  } else {
    fail("unet", w.source + ": unsupported addition_embed_type '" + cfg.addition_embed_type + "'");
  }
  conv_in.load(w, "conv_in", cfg.in_channels, c0, 3);

  down_blocks.assign(levels, {});
  int64_t out = c0;
  for (size_t i = 0; i < levels; i++) {
    int64_t in = out;
    out = ch[i];
    down_blocks[i].load(w, "down_blocks." + std::to_string(i), cfg, i, in, out, temb);
  }

  mid_block.load(w, "mid_block", cfg, ch.back(), temb);

  up_blocks.assign(levels, {});
  out = ch.back();
  for (size_t i = 0; i < levels; i++) {
    int64_t prev_out = out;
    out = ch[levels - 1 - i];
    int64_t in = ch[levels - 1 - std::min(i + 1, levels - 1)];
    up_blocks[i].load(w, "up_blocks." + std::to_string(i), cfg, i, in, out, prev_out, temb, i + 1 < levels);
  }

  conv_norm_out.load(w, "conv_norm_out", c0, cfg.norm_num_groups, cfg.norm_eps);
  conv_out.load(w, "conv_out", c0, cfg.out_channels, 3);
}

Tensor unet_time_embed(const UNetConfig& cfg, const TimestepEmbedding& time_embedding,
                       const TimestepEmbedding* add_embedding, const std::vector<float>& timesteps,
                       const Tensor* text_embeds, const Tensor* time_ids, const UNetTrace* trace) {
  const int64_t B = (int64_t)timesteps.size();
  const bool text_time = cfg.addition_embed_type == "text_time";
  if (text_time != (add_embedding != nullptr))
    fail("unet", "add_embedding is " + std::string(add_embedding ? "loaded" : "missing") +
                     " but addition_embed_type is '" + cfg.addition_embed_type + "'");
  if (!text_time && (text_embeds || time_ids))
    fail("unet", "text_embeds/time_ids given to a UNet without SDXL added conditioning (addition_embed_type '" +
                     cfg.addition_embed_type + "')");
  Tensor t = timestep_embedding(timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos,
                                (float)cfg.freq_shift);  // [B, C0]
  if (trace) (*trace)("time_proj", t);
  Tensor temb = time_embedding(t);  // [B, 4*C0]
  if (trace) (*trace)("time_embedding", temb);
  if (!text_time) return temb;

  // SDXL: add_embedding(concat(text_embeds, add_time_proj(time_ids).reshape(B, -1))).
  if (!text_embeds || !time_ids)
    fail("unet", "this SDXL UNet (addition_embed_type \"text_time\") needs text_embeds (pooled) and time_ids");
  const int64_t dim = cfg.addition_time_embed_dim, P_in = cfg.projection_class_embeddings_input_dim;
  const Tensor &te = *text_embeds, &ids = *time_ids;
  if (te.dim() != 2 || te.size(0) != B || ids.dim() != 2 || ids.size(0) != B ||
      te.size(1) + ids.size(1) * dim != P_in)
    fail("unet", "SDXL added conditioning: text_embeds " + te.str() + " and time_ids " + ids.str() +
                     " are not [" + std::to_string(B) + ", P] and [" + std::to_string(B) + ", n] with P + n*" +
                     std::to_string(dim) + " = projection_class_embeddings_input_dim " + std::to_string(P_in));
  std::vector<float> flat = ids.to_vector();  // [B*n]
  Tensor tp = timestep_embedding(flat, (int)dim, cfg.flip_sin_to_cos, (float)cfg.freq_shift);  // [B*n, dim]
  if (trace) (*trace)("add_time_proj", tp);
  Tensor add_in = ops::concat({te.to(DType::F32), tp.reshape({B, ids.size(1) * dim})}, 1);  // [B, P_in]
  Tensor aug = (*add_embedding)(add_in);  // [B, 4*C0]
  if (trace) (*trace)("add_embedding", aug);
  ops::add_(temb, aug);
  return temb;
}

Tensor UNet2DConditionModel::time_embed(const std::vector<float>& timesteps, const Tensor* text_embeds,
                                        const Tensor* time_ids, const UNetTrace* trace) const {
  return unet_time_embed(config, time_embedding, add_embedding ? &*add_embedding : nullptr, timesteps, text_embeds,
                         time_ids, trace);
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, const std::vector<float>& timesteps,
                                     const Tensor& context, const UNetExtras* extras) const {
  if (sample.dim() != 4 || sample.size(1) != config.in_channels)
    fail("unet", "sample " + sample.str() + " is not [B, " + std::to_string(config.in_channels) + ", h, w]");
  int64_t B = sample.size(0);
  int64_t mult = int64_t(1) << (config.block_out_channels.size() - 1);
  if (sample.size(2) % mult || sample.size(3) % mult)
    fail("unet", "latent size " + std::to_string(sample.size(2)) + "x" + std::to_string(sample.size(3)) +
                     " is not a multiple of " + std::to_string(mult));
  if (context.dim() != 3 || context.size(0) != B || context.size(2) != config.cross_attention_dim)
    fail("unet", "context " + context.str() + " is not [" + std::to_string(B) + ", L, " +
                     std::to_string(config.cross_attention_dim) + "]");
  std::vector<float> ts = timesteps;
  if (ts.size() == 1 && B > 1) ts.assign(B, timesteps[0]);  // diffusers: timesteps.expand(B)
  if ((int64_t)ts.size() != B)
    fail("unet", std::to_string(ts.size()) + " timesteps for a batch of " + std::to_string(B));
  const UNetTrace* trace = extras && extras->trace ? &extras->trace : nullptr;

  // Every resnet applies SiLU to the time embedding first; do it once.
  Tensor temb_act = ops::silu(time_embed(ts, extras ? extras->text_embeds : nullptr,
                                         extras ? extras->time_ids : nullptr, trace));  // [B, 4*C0]

  std::vector<Tensor> skips;
  Tensor x = conv_in(sample);  // [B, C0, h, w]
  if (trace) (*trace)("conv_in", x);
  skips.push_back(x);
  // T2I-Adapter features are used in order, one per down block; a leftover one whose shape
  // matches the mid-block output goes there (T2I-Adapter-XL), as in diffusers.
  const std::vector<Tensor>* intra = extras ? extras->down_intrablock : nullptr;
  size_t n_intra = intra ? intra->size() : 0, next_intra = 0;
  for (size_t i = 0; i < down_blocks.size(); i++) {
    const Tensor* feat = next_intra < n_intra ? &(*intra)[next_intra++] : nullptr;
    x = down_blocks[i].forward(std::move(x), temb_act, context, skips, feat, trace,
                               "down_blocks." + std::to_string(i));
  }

  if (extras && extras->down_residuals) {
    const auto& r = *extras->down_residuals;
    if (r.size() != skips.size())
      fail("unet", "ControlNet gave " + std::to_string(r.size()) + " down residuals, expected " +
                       std::to_string(skips.size()));
    for (size_t i = 0; i < skips.size(); i++) skips[i] = ops::add(skips[i], r[i]);  // new tensors: skips may alias x
  }

  x = mid_block.forward(std::move(x), temb_act, context, trace, "mid_block");  // [B, C_last, h/8, w/8]
  if (next_intra < n_intra && (*intra)[next_intra].shape() == x.shape()) ops::add_(x, (*intra)[next_intra++]);
  if (extras && extras->mid_residual) ops::add_(x, *extras->mid_residual);

  for (size_t i = 0; i < up_blocks.size(); i++)
    x = up_blocks[i].forward(std::move(x), temb_act, context, skips, trace, "up_blocks." + std::to_string(i));

  if (trace) {
    x = conv_norm_out(x);
    (*trace)("conv_norm_out", x);
    x = ops::silu(x);
  } else {
    x = conv_norm_out(x, /*silu=*/true);
  }
  x = conv_out(x);  // [B, out, h, w]
  if (trace) (*trace)("conv_out", x);
  return x;
}

}  // namespace easel
