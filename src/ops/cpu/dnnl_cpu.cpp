// Fast CPU matmul/conv on oneDNN (https://oneapi-src.github.io/oneDNN/v2.6/):
// linear and bmm via the matmul primitive, conv2d via convolution_forward (direct).
// Primitives are created once per shape and cached (creation costs ~ms). Weights are
// reordered once into the primitive's preferred (blocked) layout and cached by their data
// pointer + shape + dtype + a sampled checksum (see clear_weight_cache in ops.h).
// Memory cost of the weight cache: BF16 mode keeps one bf16 copy per weight (same bytes as
// an f16 checkpoint, half of f32). F32 mode keeps one f32 blocked copy per weight (for an
// f16 checkpoint that is 2x its size, e.g. ~3.4 GB for the SD1.5 UNet; for an f32 one the
// originals stay mapped beside it; clear_weight_cache() drops the copies).
#include <cstdlib>
#include <cblas.h>
#include <omp.h>

#include <malloc.h>
#include <unistd.h>

#include <dnnl.hpp>
#include <mutex>
#include <unordered_map>

#include "ops/cpu/cpu_util.h"
#include "ops/ops.h"

namespace easel::ops {

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

static int g_threads = 0;
static DType g_compute = DType::F32;

// glibc serves blocks above M_MMAP_THRESHOLD (dynamic, at most 32 MiB) with fresh mmaps, so
// every large activation (a UNet step allocates many of 10-80 MiB) paid page faults and
// zeroing on first touch: ~10% of a SD1.5 step. Keep them in the heap for reuse instead.
// Process-wide and set once when this backend loads; freed memory is kept, not returned.
static const bool g_malloc_tuned = [] {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();

void set_num_threads(int n) {
  g_threads = n;
  int t = n > 0 ? n : omp_get_num_procs();
  omp_set_num_threads(t);  // OpenMP kernels and oneDNN (built with the OpenMP runtime)
  openblas_set_num_threads(t);
}
int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }
void set_compute_dtype(DType t) {
  if (t != DType::F32 && t != DType::BF16) fail("ops", "compute dtype must be f32 or bf16");
  g_compute = t;
}
DType compute_dtype() { return g_compute; }
bool bf16_is_fast() {
  static const bool amx = get_effective_cpu_isa() >= cpu_isa::avx512_core_amx;
  return amx;
}

namespace cpu {

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; i++) dst[i] = to_bf16(src[i]);
}

void any_to_f32(const Tensor& src, float* dst) {
  int64_t n = src.numel();
  if (src.dtype() == DType::F32) {
    std::memcpy(dst, src.raw(), n * 4);
  } else if (src.dtype() == DType::BF16) {
    const uint16_t* s = src.data<uint16_t>();
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(s[i]);
  } else {
    convert_to_f32(src.raw(), src.dtype(), dst, n);
  }
}

void any_to_bf16(const Tensor& src, uint16_t* dst) {
  int64_t n = src.numel();
  if (src.dtype() == DType::BF16) {
    std::memcpy(dst, src.raw(), n * 2);
  } else if (src.dtype() == DType::F32) {
    f32_to_bf16(src.data<float>(), dst, n);
  } else {
    std::vector<float> tmp(n);
    any_to_f32(src, tmp.data());
    f32_to_bf16(tmp.data(), dst, n);
  }
}

}  // namespace cpu

namespace {

engine& eng() {
  static engine e(engine::kind::cpu, 0);
  return e;
}
stream& strm() {
  thread_local stream s(eng());
  return s;
}

std::string dims_str(const Shape& s) {
  std::string r;
  for (auto d : s) r += std::to_string(d) + ",";
  return r;
}

// ---- packed weight cache ----
// Each entry holds a reference to the source Tensor, so its address cannot be reused by
// another weight while cached. Least recently used entries are dropped past the byte limit.
struct Packed {
  memory::desc md;
  memory mem;  // library-owned, so an evicted entry never frees memory still in use
  Tensor src;
  uint64_t last_use = 0;
};
std::mutex g_wmu;
std::unordered_map<std::string, std::vector<std::shared_ptr<Packed>>> g_wcache;
size_t g_wbytes = 0;
uint64_t g_tick = 0;
size_t g_wlimit = [] {  // default: half the physical memory
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz / 2 : (size_t)8 << 30;
}();

uint64_t sampled_checksum(const Tensor& w) {
  const auto* p = static_cast<const unsigned char*>(w.raw());
  size_t n = w.nbytes();
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < 64 && n >= 4; i++) {
    size_t off = (n / 4 - 1) * i / 63 * 4;
    uint32_t v;
    std::memcpy(&v, p + off, 4);
    h = (h ^ v) * 1099511628211ull;
  }
  return h;
}

// Drops least recently used entries until the cache fits its limit (g_wmu held).
void evict_locked() {
  while (g_wbytes > g_wlimit) {
    std::string victim_key;
    size_t victim_i = 0;
    uint64_t oldest = UINT64_MAX;
    for (auto& [k, list] : g_wcache)
      for (size_t i = 0; i < list.size(); i++)
        if (list[i]->last_use < oldest) oldest = list[i]->last_use, victim_key = k, victim_i = i;
    if (oldest == UINT64_MAX) break;
    auto& list = g_wcache[victim_key];
    g_wbytes -= list[victim_i]->md.get_size();
    list.erase(list.begin() + (ptrdiff_t)victim_i);
    if (list.empty()) g_wcache.erase(victim_key);
  }
}

// Weight `w` (logical dims `dims` in plain layout `user_tag`) as memory of desc `target`,
// converted to target's data type, reordered and cached on first use.
memory packed_weight(const Tensor& w, const memory::dims& dims, tag user_tag, const memory::desc& target) {
  std::string key = std::to_string((uintptr_t)w.raw()) + "|" + dims_str(w.shape()) + "|" +
                    dtype_name(w.dtype()) + "|" + std::to_string(sampled_checksum(w));
  std::lock_guard<std::mutex> lk(g_wmu);
  for (auto& p : g_wcache[key])
    if (p->md == target) {
      p->last_use = ++g_tick;
      return p->mem;
    }
  auto p = std::make_shared<Packed>();
  p->md = target;
  p->src = w;
  dt want = target.data_type();
  memory::desc user_md(dims, want, user_tag);
  // Step 1: the weight in the wanted data type, plain layout (borrowed or converted).
  std::vector<uint16_t> hold16;
  std::vector<float> hold32;
  void* plain = const_cast<void*>(w.raw());
  if (want == dt::bf16 && w.dtype() != DType::BF16) {
    hold16.resize(w.numel());
    cpu::any_to_bf16(w, hold16.data());
    plain = hold16.data();
  } else if (want == dt::f32 && w.dtype() != DType::F32) {
    hold32.resize(w.numel());
    cpu::any_to_f32(w, hold32.data());
    plain = hold32.data();
  }
  // Step 2: the primitive's layout, in memory the cache owns.
  memory user(user_md, eng(), plain);
  p->mem = memory(target, eng());
  reorder(user, p->mem).execute(strm(), user, p->mem);
  strm().wait();
  p->last_use = ++g_tick;
  g_wbytes += target.get_size();
  g_wcache[key].push_back(p);
  memory m = p->mem;
  evict_locked();
  return m;
}

// ---- primitive cache ----
struct Prim {
  primitive prim;
  memory::desc src, wei, dst;
};
std::mutex g_pmu;
std::unordered_map<std::string, std::shared_ptr<Prim>> g_pcache;

template <class Make>
std::shared_ptr<Prim> cached_prim(const std::string& key, Make make) {
  std::lock_guard<std::mutex> lk(g_pmu);
  auto it = g_pcache.find(key);
  if (it != g_pcache.end()) return it->second;
  auto p = std::make_shared<Prim>(make());
  g_pcache[key] = p;
  return p;
}

bool bf16_mode() { return g_compute == DType::BF16; }
bool g_winograd = false;

// Activation tensor as the given data type: view for f32, converted copy for bf16.
memory act_memory(const Tensor& x, const memory::desc& md, std::vector<uint16_t>& hold) {
  if (md.data_type() == dt::f32) return memory(md, eng(), const_cast<void*>(x.raw()));
  hold.resize(x.numel());
  cpu::f32_to_bf16(x.data<float>(), hold.data(), x.numel());
  return memory(md, eng(), hold.data());
}

// f32 bias (view or converted copy).
Tensor bias_f32(const Tensor& b) { return b.dtype() == DType::F32 ? b : b.to(DType::F32); }

[[noreturn]] void dnnl_fail(const char* op, const dnnl::error& e, const std::string& what) {
  fail(op, std::string("oneDNN: ") + e.what() + " (" + what + ")");
}

}  // namespace

void set_winograd(bool on) { g_winograd = on; }
bool winograd() { return g_winograd; }

void set_weight_cache_limit(size_t bytes) {
  std::lock_guard<std::mutex> lk(g_wmu);
  g_wlimit = bytes;
  evict_locked();
}

void clear_weight_cache() {
  std::lock_guard<std::mutex> lk(g_wmu);
  g_wcache.clear();
  g_wbytes = 0;
}
size_t weight_cache_bytes() {
  std::lock_guard<std::mutex> lk(g_wmu);
  return g_wbytes;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b_) {
  cpu::check_f32(x, "linear");
  if (w.dim() != 2 || x.size(-1) != w.size(1))
    fail("linear", "input " + x.str() + " does not match weight " + w.str());
  int64_t K = w.size(1), N = w.size(0), M = x.numel() / K;
  Shape os = x.shape();
  os.back() = N;
  Tensor y = Tensor::empty(os);
  if (M == 0) return y;
  bool bf = bf16_mode(), has_b = b_.defined();
  dt cdt = bf ? dt::bf16 : dt::f32;
  try {
    std::string key = "mm|" + std::to_string(M) + "," + std::to_string(K) + "," + std::to_string(N) +
                      (has_b ? "|b" : "") + (bf ? "|bf16" : "|f32");
    auto p = cached_prim(key, [&] {
      memory::desc src({M, K}, cdt, tag::ab), dst({M, N}, dt::f32, tag::ab);
      // Packed (blocked) weights: 3-10% faster than reading w [N, K] in place as K x N (ba).
      memory::desc wei({K, N}, cdt, tag::any);
      memory::desc bias = has_b ? memory::desc({1, N}, dt::f32, tag::ab) : memory::desc();
      matmul::primitive_desc pd(matmul::desc(src, wei, bias, dst), eng());
      return Prim{matmul(pd), pd.src_desc(), pd.weights_desc(), pd.dst_desc()};
    });
    std::vector<uint16_t> hold;
    memory src = act_memory(x, p->src, hold);
    bool in_place = w.dtype() == DType::F32 && p->wei == memory::desc({K, N}, dt::f32, tag::ba);
    memory wei = in_place ? memory(p->wei, eng(), const_cast<void*>(w.raw())) : packed_weight(w, {K, N}, tag::ba, p->wei);
    memory dst(p->dst, eng(), y.raw());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
    Tensor b;
    if (has_b) {
      b = bias_f32(b_);
      args[DNNL_ARG_BIAS] = memory({{1, N}, dt::f32, tag::ab}, eng(), const_cast<void*>(b.raw()));
    }
    p->prim.execute(strm(), args);
    strm().wait();
  } catch (const dnnl::error& e) {
    dnnl_fail("linear", e, x.str() + " x " + w.str());
  }
  return y;
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_b) {
  cpu::check_f32(a, "bmm");
  cpu::check_f32(b, "bmm");
  if (a.dim() != 3 || b.dim() != 3) fail("bmm", "expected 3-d inputs, got " + a.str() + " and " + b.str());
  int64_t B = a.size(0), M = a.size(1), K = a.size(2);
  int64_t N = trans_b ? b.size(1) : b.size(2);
  if (b.size(0) != B || (trans_b ? b.size(2) : b.size(1)) != K)
    fail("bmm", "shapes " + a.str() + " and " + b.str() + " do not match");
  Tensor c = Tensor::empty({B, M, N});
  if (c.numel() == 0) return c;
  bool bf = bf16_mode();
  dt cdt = bf ? dt::bf16 : dt::f32;
  try {
    std::string key = "bmm|" + std::to_string(B) + "," + std::to_string(M) + "," + std::to_string(K) + "," +
                      std::to_string(N) + (trans_b ? "|t" : "|n") + (bf ? "|bf16" : "|f32");
    auto p = cached_prim(key, [&] {
      memory::desc src({B, M, K}, cdt, tag::abc), dst({B, M, N}, dt::f32, tag::abc);
      memory::desc wei({B, K, N}, cdt, trans_b ? tag::acb : tag::abc);
      matmul::primitive_desc pd(matmul::desc(src, wei, dst), eng());
      return Prim{matmul(pd), src, wei, dst};
    });
    std::vector<uint16_t> ha, hb;
    memory am = act_memory(a, p->src, ha), bm = act_memory(b, p->wei, hb);
    memory cm(p->dst, eng(), c.raw());
    p->prim.execute(strm(), {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    strm().wait();
  } catch (const dnnl::error& e) {
    dnnl_fail("bmm", e, a.str() + " x " + b.str());
  }
  return c;
}

// Runs a (de)convolution primitive on NCHW f32 x -> y (plain layouts reordered to the primitive's),
// with the packed weights and an optional bias.
void run_conv(const Prim& p, const Tensor& x, const memory& wei, const Tensor& b_, Tensor& y) {
  const Shape& xs_ = x.shape();
  const Shape& ys_ = y.shape();
  memory::desc user_src({xs_[0], xs_[1], xs_[2], xs_[3]}, dt::f32, tag::nchw);
  memory::desc user_dst({ys_[0], ys_[1], ys_[2], ys_[3]}, dt::f32, tag::nchw);
  memory xs(user_src, eng(), const_cast<void*>(x.raw()));
  memory src = xs;
  if (p.src != user_src) {
    src = memory(p.src, eng());
    reorder(xs, src).execute(strm(), xs, src);
  }
  memory ym(user_dst, eng(), y.raw());
  memory dst = p.dst == user_dst ? ym : memory(p.dst, eng());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  Tensor b;
  if (b_.defined()) {
    b = bias_f32(b_);
    args[DNNL_ARG_BIAS] = memory({{ys_[1]}, dt::f32, tag::x}, eng(), const_cast<void*>(b.raw()));
  }
  p.prim.execute(strm(), args);
  if (p.dst != user_dst) reorder(dst, ym).execute(strm(), dst, ym);
  strm().wait();
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad) {
  return conv2d_ex(x, w, b, ConvParams::same(stride, pad));
}

Tensor conv2d_ex(const Tensor& x, const Tensor& w, const Tensor& b_, const ConvParams& cp) {
  cpu::check_f32(x, "conv2d");
  const int64_t G = cp.groups;
  if (x.dim() != 4 || w.dim() != 4 || G < 1 || x.size(1) != w.size(1) * G || w.size(0) % G != 0)
    fail("conv2d", "input " + x.str() + " does not match weight " + w.str() +
                       (G > 1 ? " (groups " + std::to_string(G) + ")" : ""));
  if (cp.stride_h < 1 || cp.stride_w < 1 || cp.dilation_h < 1 || cp.dilation_w < 1 || cp.pad_t < 0 || cp.pad_b < 0 ||
      cp.pad_l < 0 || cp.pad_r < 0)
    fail("conv2d", "bad stride/dilation/padding for " + w.str());
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  const int64_t ekh = (kh - 1) * cp.dilation_h + 1, ekw = (kw - 1) * cp.dilation_w + 1;
  int64_t OH = (H + cp.pad_t + cp.pad_b - ekh) / cp.stride_h + 1, OW = (W + cp.pad_l + cp.pad_r - ekw) / cp.stride_w + 1;
  if (H + cp.pad_t + cp.pad_b < ekh || W + cp.pad_l + cp.pad_r < ekw || OH <= 0 || OW <= 0)
    fail("conv2d", "input " + x.str() + " too small for weight " + w.str());
  Tensor y = Tensor::empty({N, O, OH, OW});
  if (y.numel() == 0) return y;
  bool bf = bf16_mode(), has_b = b_.defined();
  dt cdt = bf ? dt::bf16 : dt::f32;
  const bool plain = G == 1 && cp.dilation_h == 1 && cp.dilation_w == 1 && cp.stride_h == cp.stride_w &&
                     cp.pad_t == cp.pad_b && cp.pad_t == cp.pad_l && cp.pad_t == cp.pad_r;
  const memory::dims wdims = G == 1 ? memory::dims{O, C, kh, kw} : memory::dims{G, O / G, C / G, kh, kw};
  try {
    std::string key = std::string(g_winograd && plain ? "convw|" : "conv|") + dims_str(x.shape()) + "|" +
                      dims_str(w.shape()) + "|" + std::to_string(cp.stride_h) + "," + std::to_string(cp.pad_t);
    if (!plain)
      for (int v : {cp.stride_w, cp.pad_l, cp.pad_b, cp.pad_r, cp.dilation_h, cp.dilation_w, cp.groups})
        key += "," + std::to_string(v);
    key += std::string(has_b ? "|b" : "") + (bf ? "|bf16" : "|f32");
    auto p = cached_prim(key, [&] {
      memory::desc src({N, C, H, W}, cdt, tag::any), wei(wdims, cdt, tag::any);
      memory::desc dst({N, O, OH, OW}, dt::f32, tag::any);
      memory::desc bias = has_b ? memory::desc({O}, dt::f32, tag::x) : memory::desc();
      // Winograd for f32 3x3/stride-1 convs (oneDNN F(2x2,3x3) on AVX-512): fewer multiplies, larger packed weights.
      algorithm alg = g_winograd && plain && kh == 3 && kw == 3 && cp.stride_h == 1 && !bf
                          ? algorithm::convolution_winograd
                          : algorithm::convolution_direct;
      convolution_forward::desc d(prop_kind::forward_inference, alg, src, wei, bias, dst, {cp.stride_h, cp.stride_w},
                                  {cp.dilation_h - 1, cp.dilation_w - 1}, {cp.pad_t, cp.pad_l}, {cp.pad_b, cp.pad_r});
      convolution_forward::primitive_desc pd(d, eng());
      return Prim{convolution_forward(pd), pd.src_desc(), pd.weights_desc(), pd.dst_desc()};
    });
    run_conv(*p, x, packed_weight(w, wdims, G == 1 ? tag::oihw : tag::goihw, p->wei), b_, y);
  } catch (const dnnl::error& e) {
    dnnl_fail("conv2d", e, x.str() + " * " + w.str());
  }
  return y;
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b_, int stride, int pad, int output_padding) {
  cpu::check_f32(x, "conv_transpose2d");
  if (x.dim() != 4 || w.dim() != 4 || x.size(1) != w.size(0))
    fail("conv_transpose2d", "input " + x.str() + " does not match weight " + w.str());
  if (stride < 1 || pad < 0 || output_padding < 0 || output_padding >= stride)
    fail("conv_transpose2d", "bad stride/padding for " + w.str());
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = w.size(1), kh = w.size(2), kw = w.size(3);
  int64_t OH = (H - 1) * stride - 2 * pad + kh + output_padding, OW = (W - 1) * stride - 2 * pad + kw + output_padding;
  if (OH <= 0 || OW <= 0) fail("conv_transpose2d", "input " + x.str() + " too small for weight " + w.str());
  Tensor y = Tensor::empty({N, O, OH, OW});
  if (y.numel() == 0) return y;
  bool has_b = b_.defined();
  try {
    std::string key = "deconv|" + dims_str(x.shape()) + "|" + dims_str(w.shape()) + "|" + std::to_string(stride) +
                      "," + std::to_string(pad) + "," + std::to_string(output_padding) + (has_b ? "|b" : "");
    auto p = cached_prim(key, [&] {
      memory::desc src({N, C, H, W}, dt::f32, tag::any), wei({O, C, kh, kw}, dt::f32, tag::any);
      memory::desc dst({N, O, OH, OW}, dt::f32, tag::any);
      memory::desc bias = has_b ? memory::desc({O}, dt::f32, tag::x) : memory::desc();
      deconvolution_forward::desc d(prop_kind::forward_inference, algorithm::deconvolution_direct, src, wei, bias, dst,
                                    {stride, stride}, {pad, pad}, {pad - output_padding, pad - output_padding});
      deconvolution_forward::primitive_desc pd(d, eng());
      return Prim{deconvolution_forward(pd), pd.src_desc(), pd.weights_desc(), pd.dst_desc()};
    });
    // PyTorch stores ConvTranspose2d weights as [in, out, kh, kw]: oneDNN's (O, I) dims in iohw order.
    run_conv(*p, x, packed_weight(w, {O, C, kh, kw}, tag::iohw, p->wei), b_, y);
  } catch (const dnnl::error& e) {
    dnnl_fail("conv_transpose2d", e, x.str() + " * " + w.str());
  }
  return y;
}

}  // namespace easel::ops
