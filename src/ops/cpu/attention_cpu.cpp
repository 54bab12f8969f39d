// Blocked scaled-dot-product attention (FlashAttention's tiling idea, arXiv:2205.14135,
// without the online rescaling: a whole row-block of scores fits in L2 here).
// For each (batch, head, block of bm queries): S = Q_blk K^T (GEMM), row softmax in f32
// (exp without division), O_blk = E V (GEMM), O_blk /= row sums. Peak extra memory is one
// [bm, Lk] f32 score block (+ bf16 copy) per thread; [B, H, Lq, Lk] is never built.
// GEMMs are oneDNN matmul primitives on strided views of q/k/v (no head transposes), run
// single-threaded inside the OpenMP loop over blocks; bf16 operands in BF16 mode.
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
  const float sc = 1.0f / std::sqrt((float)D);
  bool bf = compute_dtype() == DType::BF16;
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
        for (int64_t j = 0; j < lim; j++) mx = std::max(mx, row[j]);
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
