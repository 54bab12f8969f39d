// Op interface: every model calls these free functions and nothing lower.
// Each op dispatches on the tensors' device (only CPU exists today; a CUDA backend adds
// ops/cuda/*.cu behind the same signatures). Activations are f32; weights may be
// f32/f16/bf16 (kept compact; the backend converts or uses native low-precision kernels).
// Shapes follow PyTorch: NCHW activations, OIHW conv weights, [out, in] linear weights.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace easel::ops {

// Threads used by the CPU backend (0 = all cores).
void set_num_threads(int n);
int num_threads();

// Matmul precision for large ops: F32 (exact, used by parity tests) or BF16
// (bf16 inputs, f32 accumulation; ~3x faster on CPUs with AVX512-BF16/AMX).
// Governs linear, conv2d, bmm and attention's two matmuls; outputs stay f32.
void set_compute_dtype(DType t);
DType compute_dtype();
// Whether BF16 compute is actually faster than F32 on this CPU: true only with AMX
// (oneDNN's avx512_core_amx). With AVX512-BF16 alone (e.g. this project's 2-core Xeon),
// vdpbf16ps has half the FMA throughput and oneDNN bf16 matmul/conv measured ~0.55x f32.
bool bf16_is_fast();

// The CPU backend packs each weight once (oneDNN blocked layout, bf16 in BF16 mode, f32
// in F32 mode) and caches it by the weight's data pointer, shape and dtype (plus a sampled
// checksum); each entry keeps a reference to its source Tensor. Call clear_weight_cache()
// after changing weights in place (LoRA merge/unmerge) and after unloading a model.
// Least recently used entries are dropped beyond the limit (default: half of RAM).
void clear_weight_cache();
// Winograd convolutions (oneDNN; F(2x2,3x3) on AVX-512) for f32 3x3 stride-1 convs: ~15% faster SD1.5 UNet step
// here, but the packed weights are 4x larger (peak RSS ~9 GiB for SD1.5). Off by default.
void set_winograd(bool on);
bool winograd();
void set_weight_cache_limit(size_t bytes);
// Bytes held by the packed-weight cache.
size_t weight_cache_bytes();

// y = x @ w^T + b.  x [..., K], w [N, K], b [N] or undefined -> [..., N]
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
// Batched matmul c = a @ (trans_b ? b^T : b).  a [B, M, K], b [B, K, N] or [B, N, K] -> [B, M, N]
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_b);
// 2-d convolution, zero padding.  x [N, C, H, W], w [O, C, kh, kw], b [O] or undefined
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad);

// Group norm over (C/groups, H, W) per sample, then affine. x [N, C, ...]; optional fused SiLU.
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                  bool silu = false);
// Layer norm over the last dim.  x [..., C]
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);

// Scaled dot-product attention, scale 1/sqrt(D), heads packed in the channel dim.
// q [B, Lq, H*D], k/v [B, Lk, H*D] -> [B, Lq, H*D]. causal masks j > i.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal = false);

// Elementwise (return new tensors; *_ variants work in place).
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);        // erf form (torch default)
Tensor gelu_tanh(const Tensor& x);   // tanh approximation
Tensor quick_gelu(const Tensor& x);  // x * sigmoid(1.702 x) (OpenAI CLIP)
// GEGLU: x [..., 2N] -> x[..., :N] * gelu(x[..., N:])
Tensor geglu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);  // same numel
void add_(Tensor& a, const Tensor& b);         // a += b (same numel)
Tensor scale(const Tensor& x, float s);
// x [N, C, H, W] += b [N, C] broadcast over H, W (time embedding into a ResBlock).
void add_channel_bias_(Tensor& x, const Tensor& b);
Tensor softmax(const Tensor& x);  // over the last dim

// Layout / shape ops.
Tensor concat(const std::vector<Tensor>& xs, int dim);
Tensor upsample_nearest2x(const Tensor& x);  // [N, C, H, W] -> [N, C, 2H, 2W]
Tensor nchw_to_nlc(const Tensor& x);         // [N, C, H, W] -> [N, H*W, C]
Tensor nlc_to_nchw(const Tensor& x, int64_t h, int64_t w);  // [N, H*W, C] -> [N, C, H, W]
// Rows of table for each id.  table [V, C], ids (i64 or i32) [n...] -> [n..., C]
Tensor embedding(const Tensor& table, const Tensor& ids);

// ---- Vision ops for the preprocessor networks (OpenPose, HED, DPT / Depth Anything, UperNet) ----
// Each matches the torch.nn.functional op of the same name (f32 activations; weights f32/f16/bf16).
struct ConvParams {
  int stride_h = 1, stride_w = 1;
  int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;  // zero padding
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;
  static ConvParams same(int stride, int pad, int groups = 1, int dilation = 1) {
    return {stride, stride, pad, pad, pad, pad, dilation, dilation, groups};
  }
};
// General convolution (oneDNN).  x [N, C, H, W], w [O, C/groups, kh, kw], b [O] or undefined -> [N, O, OH, OW]
Tensor conv2d_ex(const Tensor& x, const Tensor& w, const Tensor& b, const ConvParams& p);
// torch.nn.ConvTranspose2d (oneDNN deconvolution).  x [N, C, H, W], w [C, O, kh, kw] (PyTorch layout), b [O]
// -> [N, O, (H-1)*stride - 2*pad + kh + output_padding, (W-1)*stride - 2*pad + kw + output_padding]
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad,
                        int output_padding = 0);
// F.max_pool2d (implicit -inf padding, PyTorch's ceil_mode rule).  x [N, C, H, W]
Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad = 0, bool ceil_mode = false);
// F.adaptive_avg_pool2d.  x [N, C, H, W] -> [N, C, oh, ow]
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t oh, int64_t ow);
// F.interpolate(mode="bilinear" / "bicubic" (A = -0.75, border-clamped taps)) to [N, C, oh, ow].
// scale_h/scale_w > 0: the scale_factor given to PyTorch (used for the coordinate map when
// align_corners is false, as PyTorch does when called with scale_factor); 0 = in/out size ratio.
Tensor interpolate_bilinear(const Tensor& x, int64_t oh, int64_t ow, bool align_corners, double scale_h = 0,
                            double scale_w = 0);
Tensor interpolate_bicubic(const Tensor& x, int64_t oh, int64_t ow, bool align_corners, double scale_h = 0,
                           double scale_w = 0);
// Inference batch norm per channel: (x - mean) / sqrt(var + eps) * gamma + beta.  x [N, C, ...]
Tensor batch_norm(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma, const Tensor& beta,
                  float eps);
Tensor relu(const Tensor& x);
void relu_(Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor mul(const Tensor& a, const Tensor& b);  // elementwise, same numel

// Reference kernels (OpenBLAS sgemm + plain loops, f32 math whatever compute_dtype is).
// Slow but simple: the fast paths above are tested against them (tests/test_ops.cpp).
namespace ref {
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_b);
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad);
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                  bool silu = false);
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal = false);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);
Tensor geglu(const Tensor& x);
}  // namespace ref

}  // namespace easel::ops
