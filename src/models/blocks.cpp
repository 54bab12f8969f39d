// Shared UNet/VAE blocks; see blocks.h for the references.
#include "models/blocks.h"

#include <cmath>

namespace easel {

using nn::join;

Tensor timestep_embedding(const std::vector<float>& timesteps, int dim, bool flip_sin_to_cos,
                          float downscale_freq_shift, float scale, float max_period) {
  // diffusers get_timestep_embedding, step by step in f32 as torch does it:
  //   exponent = -log(max_period) * arange(half) / (half - shift); freq = exp(exponent)
  //   emb = t * freq * scale; [sin | cos] (or [cos | sin] with flip_sin_to_cos); zero pad if dim odd.
  int64_t B = (int64_t)timesteps.size(), half = dim / 2;
  Tensor emb = Tensor::zeros({B, (int64_t)dim});  // [B, dim]
  const float neg_log = (float)-std::log((double)max_period);
  const float denom = (float)half - downscale_freq_shift;
  std::vector<float> freq(half);
  for (int64_t i = 0; i < half; i++) freq[i] = std::exp(neg_log * (float)i / denom);
  for (int64_t b = 0; b < B; b++) {
    float* e = emb.f32() + b * dim;
    for (int64_t i = 0; i < half; i++) {
      float a = timesteps[b] * freq[i] * scale;
      float s = std::sin(a), c = std::cos(a);
      e[i] = flip_sin_to_cos ? c : s;
      e[half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return emb;
}

// ---- TimestepEmbedding ----------------------------------------------------------------------
void TimestepEmbedding::load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out) {
  linear_1.load(w, join(prefix, "linear_1"), in, out);
  linear_2.load(w, join(prefix, "linear_2"), out, out);
}

Tensor TimestepEmbedding::operator()(const Tensor& x) const { return linear_2(ops::silu(linear_1(x))); }

// ---- ResnetBlock2D --------------------------------------------------------------------------
void ResnetBlock2D::load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out,
                         int64_t temb_channels, int groups, float eps) {
  norm1.load(w, join(prefix, "norm1"), in, groups, eps);
  conv1.load(w, join(prefix, "conv1"), in, out, 3);
  if (temb_channels > 0) {
    time_emb_proj.emplace();
    time_emb_proj->load(w, join(prefix, "time_emb_proj"), temb_channels, out);
  } else {
    time_emb_proj.reset();
  }
  norm2.load(w, join(prefix, "norm2"), out, groups, eps);
  conv2.load(w, join(prefix, "conv2"), out, out, 3);
  if (in != out) {
    conv_shortcut.emplace();
    conv_shortcut->load(w, join(prefix, "conv_shortcut"), in, out, 1);
  } else {
    conv_shortcut.reset();
  }
}

Tensor ResnetBlock2D::operator()(const Tensor& x, const Tensor& temb_act) const {
  Tensor h = conv1(norm1(x, /*silu=*/true));  // [B, out, H, W]
  if (time_emb_proj && temb_act.defined()) ops::add_channel_bias_(h, (*time_emb_proj)(temb_act));  // + [B, out]
  Tensor n = norm2(h, /*silu=*/true);
  h = Tensor();  // free before conv2 allocates its output (peak: x, n, output)
  h = conv2(n);
  n = Tensor();
  if (conv_shortcut)
    ops::add_(h, (*conv_shortcut)(x));
  else
    ops::add_(h, x);
  return h;
}

// ---- Downsample2D / Upsample2D --------------------------------------------------------------
void Downsample2D::load(const WeightStore& w, const std::string& prefix, int64_t channels, bool vae_padding) {
  asymmetric = vae_padding;
  conv.load(w, join(prefix, "conv"), channels, channels, 3, /*stride=*/2, /*pad=*/vae_padding ? 0 : 1);
}

Tensor Downsample2D::operator()(const Tensor& x) const {
  if (!asymmetric) return conv(x);
  // F.pad(x, (0, 1, 0, 1)): one zero column on the right, one zero row at the bottom.
  int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor p = ops::concat({x, Tensor::zeros({B, C, H, 1})}, 3);      // [B, C, H, W+1]
  p = ops::concat({p, Tensor::zeros({B, C, 1, W + 1})}, 2);          // [B, C, H+1, W+1]
  return conv(p);
}

void Upsample2D::load(const WeightStore& w, const std::string& prefix, int64_t channels) {
  conv.load(w, join(prefix, "conv"), channels, channels, 3);
}

Tensor Upsample2D::operator()(const Tensor& x) const { return conv(ops::upsample_nearest2x(x)); }

// ---- Attention ------------------------------------------------------------------------------
void Attention::load(const WeightStore& w, const std::string& prefix, int64_t query_dim, int64_t context_dim,
                     int heads_, int64_t dim_head, bool qkv_bias) {
  heads = heads_;
  int64_t inner = heads_ * dim_head;
  to_q.load(w, join(prefix, "to_q"), query_dim, inner, qkv_bias);
  to_k.load(w, join(prefix, "to_k"), context_dim, inner, qkv_bias);
  to_v.load(w, join(prefix, "to_v"), context_dim, inner, qkv_bias);
  to_out.load(w, join(prefix, "to_out.0"), inner, query_dim);
}

Tensor Attention::operator()(const Tensor& x, const Tensor& context) const {
  const Tensor& ctx = context.defined() ? context : x;
  // ops::attention works head by head, so no [B, H, L, S] score tensor is ever built.
  Tensor o = ops::attention(to_q(x), to_k(ctx), to_v(ctx), heads);  // [B, L, inner]
  return to_out(o);
}

// ---- FeedForward (GEGLU) --------------------------------------------------------------------
void FeedForward::load(const WeightStore& w, const std::string& prefix, int64_t dim, int64_t inner) {
  net_0_proj.load(w, join(prefix, "net.0.proj"), dim, 2 * inner);
  net_2.load(w, join(prefix, "net.2"), inner, dim);
}

Tensor FeedForward::operator()(const Tensor& x) const { return net_2(ops::geglu(net_0_proj(x))); }

// ---- BasicTransformerBlock ------------------------------------------------------------------
void BasicTransformerBlock::load(const WeightStore& w, const std::string& prefix, int64_t dim, int heads,
                                 int64_t dim_head, int64_t cross_dim) {
  norm1.load(w, join(prefix, "norm1"), dim);
  attn1.load(w, join(prefix, "attn1"), dim, dim, heads, dim_head);
  norm2.load(w, join(prefix, "norm2"), dim);
  attn2.load(w, join(prefix, "attn2"), dim, cross_dim, heads, dim_head);
  norm3.load(w, join(prefix, "norm3"), dim);
  ff.load(w, join(prefix, "ff"), dim, 4 * dim);
}

Tensor BasicTransformerBlock::operator()(Tensor x, const Tensor& context) const {
  Tensor h = attn1(norm1(x));  // [B, L, dim]
  ops::add_(h, x);
  x = std::move(h);
  h = attn2(norm2(x), context);
  ops::add_(h, x);
  x = std::move(h);
  h = ff(norm3(x));
  ops::add_(h, x);
  return h;
}

// ---- Transformer2DModel ---------------------------------------------------------------------
void Transformer2DModel::load(const WeightStore& w, const std::string& prefix, int64_t channels, int heads,
                              int64_t dim_head, int num_layers, int64_t cross_dim, bool use_linear_projection,
                              int groups) {
  int64_t inner = heads * dim_head;
  norm.load(w, join(prefix, "norm"), channels, groups, 1e-6f);
  linear_proj = use_linear_projection;
  if (linear_proj) {
    proj_in_linear.load(w, join(prefix, "proj_in"), channels, inner);
    proj_out_linear.load(w, join(prefix, "proj_out"), inner, channels);
  } else {
    proj_in_conv.load(w, join(prefix, "proj_in"), channels, inner, 1);
    proj_out_conv.load(w, join(prefix, "proj_out"), inner, channels, 1);
  }
  transformer_blocks.assign(num_layers, {});
  for (int i = 0; i < num_layers; i++)
    transformer_blocks[i].load(w, join(prefix, "transformer_blocks." + std::to_string(i)), inner, heads, dim_head,
                               cross_dim);
}

Tensor Transformer2DModel::operator()(const Tensor& x, const Tensor& context) const {
  int64_t H = x.size(2), W = x.size(3);
  Tensor h = norm(x);  // [B, C, H, W]
  if (linear_proj) {
    h = proj_in_linear(ops::nchw_to_nlc(h));  // [B, HW, inner]
  } else {
    h = ops::nchw_to_nlc(proj_in_conv(h));  // [B, HW, inner]
  }
  for (const auto& blk : transformer_blocks) h = blk(std::move(h), context);
  if (linear_proj) {
    h = ops::nlc_to_nchw(proj_out_linear(h), H, W);  // [B, C, H, W]
  } else {
    h = proj_out_conv(ops::nlc_to_nchw(h, H, W));
  }
  ops::add_(h, x);
  return h;
}

// ---- VAE mid-block attention ----------------------------------------------------------------
void VAEAttention::load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups, float eps) {
  group_norm.load(w, join(prefix, "group_norm"), channels, groups, eps);
  to_q.load(w, join(prefix, "to_q"), channels, channels);
  to_k.load(w, join(prefix, "to_k"), channels, channels);
  to_v.load(w, join(prefix, "to_v"), channels, channels);
  to_out.load(w, join(prefix, "to_out.0"), channels, channels);
}

Tensor VAEAttention::operator()(const Tensor& x) const {
  int64_t H = x.size(2), W = x.size(3);
  Tensor h = ops::nchw_to_nlc(group_norm(x));                  // [B, HW, C]
  h = to_out(ops::attention(to_q(h), to_k(h), to_v(h), 1));    // one head, scale 1/sqrt(C)
  h = ops::nlc_to_nchw(h, H, W);                               // [B, C, H, W]
  ops::add_(h, x);
  return h;
}

}  // namespace easel
