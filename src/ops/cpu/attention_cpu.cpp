// Blocked scaled-dot-product attention (FlashAttention's tiling idea, arXiv:2205.14135,
// without the online rescaling: a whole row-block of scores fits in L2 here).
// For each (batch, head, block of bm queries): S = Q_blk K^T (GEMM), row softmax in f32
// (exp without division), O_blk = E V (GEMM), O_blk /= row sums. Peak extra memory is one
// [bm, Lk] f32 score block (+ bf16 copy) per thread; [B, H, Lq, Lk] is never built.
// F32 (with AVX-512): GEMMs on a register-tiled micro-kernel over packed K^T/V panels.
// BF16 mode (or no AVX-512): oneDNN matmul primitives on strided views of q/k/v, run
// single-threaded inside the OpenMP loop over blocks; bf16 operands in BF16 mode.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <tuple>

#include "ops/cpu/cpu_util.h"
#include "ops/ops.h"

namespace easel::ops {

using namespace dnnl;
using dt = memory::data_type;

namespace {

struct Gemm {
  matmul prim;
  memory::desc a, b, c;
  size_t scratch;
};

engine& eng() {
  static engine e(engine::kind::cpu, 0);
  return e;
}
stream& strm() {
  thread_local stream s(eng());
  return s;
}

// C[m, n] (ldc) = A[m, k] (lda, row-major) * B, B given as [k, n] with strides (sbk, sbn).
std::shared_ptr<Gemm> gemm_prim(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t sbk, int64_t sbn,
                                int64_t ldc, dt cdt) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int>,
                  std::shared_ptr<Gemm>>
      cache;
  auto key = std::make_tuple(m, n, k, lda, sbk, sbn, ldc, (int)cdt);
  std::lock_guard<std::mutex> lk(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  memory::desc a({m, k}, cdt, memory::dims{lda, 1}), b({k, n}, cdt, memory::dims{sbk, sbn});
  memory::desc c({m, n}, dt::f32, memory::dims{ldc, 1});
  primitive_attr attr;
  attr.set_scratchpad_mode(scratchpad_mode::user);  // per-thread scratch: safe to run concurrently
  matmul::primitive_desc pd(matmul::desc(a, b, c), attr, eng());
  auto g = std::make_shared<Gemm>(Gemm{matmul(pd), a, b, c, pd.scratchpad_desc().get_size()});
  cache[key] = g;
  return g;
}

void run(const Gemm& g, const void* a, const void* b, float* c, std::vector<char>& scratch) {
  if (scratch.size() < g.scratch) scratch.resize(g.scratch);
  memory am(g.a, eng(), const_cast<void*>(a)), bm(g.b, eng(), const_cast<void*>(b)), cm(g.c, eng(), c);
  memory sm(memory::desc({(int64_t)g.scratch}, dt::u8, memory::format_tag::x), eng(), scratch.data());
  g.prim.execute(strm(), {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}});
  strm().wait();
}


#ifdef __AVX512F__
// ---- f32 AVX-512 path: register-tiled micro-kernel on packed K^T / V panels ----
// C[r, 0:16*NV] (ldc) = sum_k A[r, k] (lda) * B[k, 0:16*NV] (ldb), r < rows <= R.
// The last 16-lane vector is stored through `mask` (partial head dims).
template <int R, int NV>
inline void micro(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                  __mmask16 mask) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    __m512 b[NV];
    for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_ps(B + k * ldb + 16 * v);
    for (int r = 0; r < R; r++) {
      __m512 a = _mm512_set1_ps(A[r * lda + k]);
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; r++) {
    for (int v = 0; v < NV - 1; v++) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
    _mm512_mask_storeu_ps(C + r * ldc + 16 * (NV - 1), mask, acc[r][NV - 1]);
  }
}

template <int R, int NV>
void micro_rows(int rows, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                __mmask16 mask) {
  if constexpr (R > 0) {
    if (rows == R) return micro<R, NV>(K, A, lda, B, ldb, C, ldc, mask);
    return micro_rows<R - 1, NV>(rows, K, A, lda, B, ldb, C, ldc, mask);
  }
}

// C[m, 0:n] (ldc) = A[m, K] (lda) * B[K, n], B packed with row stride ldb >= roundup(n, 16)
// and zero padding past n (those lanes are computed but not stored).
void gemm_f32(int64_t m, int64_t n, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
              int64_t ldc) {
  for (int64_t c0 = 0; c0 < n; c0 += 64) {
    int64_t nc = std::min<int64_t>(64, n - c0), nv = (nc + 15) / 16;
    __mmask16 mask = (nc % 16) ? (__mmask16)((1u << (nc % 16)) - 1) : (__mmask16)0xffff;
    int64_t R = nv == 4 ? 6 : 8;  // 24 accumulators + operands fit the 32 zmm registers
    for (int64_t r0 = 0; r0 < m; r0 += R) {
      int rows = (int)std::min<int64_t>(R, m - r0);
      const float* a = A + r0 * lda;
      float* c = C + r0 * ldc + c0;
      switch (nv) {
        case 4: micro_rows<6, 4>(rows, K, a, lda, B + c0, ldb, c, ldc, mask); break;
        case 3: micro_rows<8, 3>(rows, K, a, lda, B + c0, ldb, c, ldc, mask); break;
        case 2: micro_rows<8, 2>(rows, K, a, lda, B + c0, ldb, c, ldc, mask); break;
        default: micro_rows<8, 1>(rows, K, a, lda, B + c0, ldb, c, ldc, mask); break;
      }
    }
  }
}
#endif

#ifdef __AVX512F__
// F32 path: K^T packed per (batch, head) into 64-column panels [Lk/64][D][64] and V into
// [Lk][roundup(D, 16)] (zero padded), so both GEMMs run on the register-tiled micro-kernel.
void attention_f32(const float* q, const float* k, const float* v, float* o, int64_t B, int64_t heads, int64_t Lq,
                   int64_t Lk, int64_t D, bool causal) {
  const int64_t HD = heads * D, Lkp = (Lk + 63) / 64 * 64, Dp = (D + 15) / 16 * 16;
  const float sc = 1.0f / std::sqrt((float)D);
  std::vector<float> kp(B * heads * Lkp * D), vp(B * heads * Lk * Dp);
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < heads; h++) {
      float* kd = kp.data() + (b * heads + h) * Lkp * D;
      float* vd = vp.data() + (b * heads + h) * Lk * Dp;
      for (int64_t j0 = 0; j0 < Lkp; j0 += 64)
        for (int64_t c = 0; c < 64; c++) {
          const float* kr = k + (b * Lk + j0 + c) * HD + h * D;
          float* kc = kd + j0 * D + c;
          for (int64_t d = 0; d < D; d++) kc[d * 64] = j0 + c < Lk ? kr[d] : 0.f;
        }
      for (int64_t j = 0; j < Lk; j++)
        for (int64_t d = 0; d < Dp; d++) vd[j * Dp + d] = d < D ? v[(b * Lk + j) * HD + h * D + d] : 0.f;
    }
  // Query block: ~256K score floats (1 MiB, L2-resident) per thread, a multiple of 24 rows.
  int64_t bm = std::clamp<int64_t>((256 * 1024) / Lkp, 8, 192);
  if (bm >= 24) bm = bm / 24 * 24;
  bm = std::min(bm, Lq);
  int64_t nqb = (Lq + bm - 1) / bm, ntask = B * heads * nqb;
#pragma omp parallel
  {
    std::vector<float> s(bm * Lkp), rs(bm);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < ntask; t++) {
      int64_t b = t / (heads * nqb), h = t / nqb % heads, q0 = t % nqb * bm;
      int64_t m = std::min(bm, Lq - q0);
      const float* qa = q + (b * Lq + q0) * HD + h * D;
      const float* kd = kp.data() + (b * heads + h) * Lkp * D;
      const float* vd = vp.data() + (b * heads + h) * Lk * Dp;
      float* out = o + (b * Lq + q0) * HD + h * D;
      for (int64_t j0 = 0; j0 < Lk; j0 += 64)
        gemm_f32(m, std::min<int64_t>(64, Lk - j0), D, qa, HD, kd + j0 * D, 64, s.data() + j0, Lkp);
      for (int64_t i = 0; i < m; i++) {
        float* row = s.data() + i * Lkp;
        int64_t lim = causal ? std::min(Lk, q0 + i + 1) : Lk;
        __m512 vmx = _mm512_set1_ps(-INFINITY);
        int64_t j = 0;
        for (; j + 16 <= lim; j += 16) vmx = _mm512_max_ps(vmx, _mm512_loadu_ps(row + j));
        float mx = _mm512_reduce_max_ps(vmx);
        for (; j < lim; j++) mx = std::max(mx, row[j]);
        mx *= sc;
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t jj = 0; jj < lim; jj++) {
          float ev = cpu::exp_f(row[jj] * sc - mx);
          row[jj] = ev;
          sum += ev;
        }
        for (int64_t jj = lim; jj < Lk; jj++) row[jj] = 0.f;
        rs[i] = 1.f / sum;
      }
      gemm_f32(m, D, Lk, s.data(), Lkp, vd, Dp, out, HD);
      for (int64_t i = 0; i < m; i++)
#pragma omp simd
        for (int64_t d = 0; d < D; d++) out[i * HD + d] *= rs[i];
    }
  }
}
#endif

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  cpu::check_f32(q, "attention");
  cpu::check_f32(k, "attention");
  cpu::check_f32(v, "attention");
  if (q.dim() != 3 || k.dim() != 3 || v.dim() != 3 || heads <= 0 || q.size(2) % heads)
    fail("attention", "q " + q.str() + ", k " + k.str() + ", v " + v.str() + " with " + std::to_string(heads) +
                          " heads");
  int64_t B = q.size(0), Lq = q.size(1), Lk = k.size(1), HD = q.size(2), D = HD / heads;
  if (k.size(2) != HD || v.size(2) != HD || k.size(0) != B || v.size(0) != B || v.size(1) != Lk)
    fail("attention", "q " + q.str() + ", k " + k.str() + ", v " + v.str() + " do not match");
  Tensor o = Tensor::empty({B, Lq, HD});
  if (o.numel() == 0 || Lk == 0) return o;
  bool bf = compute_dtype() == DType::BF16;
#ifdef __AVX512F__
  if (!bf) {
    attention_f32(q.f32(), k.f32(), v.f32(), o.f32(), B, heads, Lq, Lk, D, causal);
    return o;
  }
#endif
  const float sc = 1.0f / std::sqrt((float)D);
  dt cdt = bf ? dt::bf16 : dt::f32;
  size_t esz = bf ? 2 : 4;

  // Operands in the compute type (bf16 copies in BF16 mode).
  std::vector<uint16_t> qb, kb, vb;
  const void *qp = q.raw(), *kp = k.raw(), *vp = v.raw();
  if (bf) {
    qb.resize(q.numel()), kb.resize(k.numel()), vb.resize(v.numel());
    cpu::f32_to_bf16(q.f32(), qb.data(), q.numel());
    cpu::f32_to_bf16(k.f32(), kb.data(), k.numel());
    cpu::f32_to_bf16(v.f32(), vb.data(), v.numel());
    qp = qb.data(), kp = kb.data(), vp = vb.data();
  }

  // Query block: ~256K score floats (1 MiB) per thread, 16..128 rows.
  int64_t bm = std::clamp<int64_t>((256 * 1024) / std::max<int64_t>(Lk, 1), 16, 128);
  bm = std::min(bm, Lq);
  int64_t nqb = (Lq + bm - 1) / bm, tail = Lq - (nqb - 1) * bm;
  std::shared_ptr<Gemm> qk[2], pv[2];
  try {
    for (int t = 0; t < 2; t++) {
      int64_t m = t == 0 ? bm : tail;
      qk[t] = gemm_prim(m, Lk, D, HD, 1, HD, Lk, cdt);  // S = Q K^T: K^T is [D, Lk] strides (1, HD)
      pv[t] = gemm_prim(m, D, Lk, Lk, HD, 1, HD, cdt);  // O = E V: V is [Lk, D] strides (HD, 1)
    }
  } catch (const dnnl::error& e) {
    fail("attention", std::string("oneDNN: ") + e.what());
  }

  int64_t ntask = B * heads * nqb;
#pragma omp parallel
  {
    std::vector<float> s(bm * Lk), rs(bm);
    std::vector<uint16_t> e16(bf ? bm * Lk : 0);
    std::vector<char> scratch;
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < ntask; t++) {
      int64_t b = t / (heads * nqb), h = t / nqb % heads, q0 = t % nqb * bm;
      int64_t m = std::min(bm, Lq - q0);
      int which = m == bm ? 0 : 1;
      const char* qa = (const char*)qp + ((b * Lq + q0) * HD + h * D) * esz;
      const char* ka = (const char*)kp + (b * Lk * HD + h * D) * esz;
      const char* va = (const char*)vp + (b * Lk * HD + h * D) * esz;
      float* out = o.f32() + (b * Lq + q0) * HD + h * D;
      run(*qk[which], qa, ka, s.data(), scratch);
      for (int64_t i = 0; i < m; i++) {
        float* row = s.data() + i * Lk;
        int64_t lim = causal ? std::min(Lk, q0 + i + 1) : Lk;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < lim; j++) mx = row[j] > mx ? row[j] : mx;
        mx *= sc;
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < lim; j++) {
          float ev = cpu::exp_f(row[j] * sc - mx);
          row[j] = ev;
          sum += ev;
        }
        for (int64_t j = lim; j < Lk; j++) row[j] = 0.f;
        rs[i] = 1.f / sum;
        if (bf) {
          uint16_t* er = e16.data() + i * Lk;
#pragma omp simd
          for (int64_t j = 0; j < Lk; j++) er[j] = cpu::to_bf16(row[j]);
        }
      }
      run(*pv[which], bf ? (const void*)e16.data() : (const void*)s.data(), va, out, scratch);
      for (int64_t i = 0; i < m; i++)
        for (int64_t d = 0; d < D; d++) out[i * HD + d] *= rs[i];
    }
  }
  return o;
}

}  // namespace easel::ops
