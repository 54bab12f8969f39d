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
