#include "lora/lora_bypass.h"

#include <dnnl.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "models/nn.h"
#include "ops/ops.h"

namespace easel::lora {

namespace {

// Plain LoRA terms of one layer. Linear: one term, factors of all LoRAs concatenated along the rank
// (down [R, in], up [out, R], strength·scale folded into up). Conv: one term per LoRA, down
// [r, in, kh, kw] with the layer's stride/padding (or Tucker: down [r, in, 1, 1], mid [r, r, kh, kw]),
// up [out, r, 1, 1].
struct LowRank final : nn::Bypass {
  struct Term {
    Tensor down, mid, up;
  };
  bool conv = false;
  std::vector<Term> terms;
  void add(const Tensor& x, Tensor& y, int stride, int pad) const override {
    for (const Term& t : terms) {
      if (!conv) {  // t = x down^T [M, R]; y += t up^T (accumulated in place: no [M, out] temporary)
        const int64_t in = t.down.size(1), R = t.down.size(0), out = t.up.size(0), M = x.numel() / in;
        if (x.dtype() != DType::F32 || y.dtype() != DType::F32 || y.numel() != M * out)
          fail("lora", "bypass: unexpected activations " + x.str() + " -> " + y.str());
        Tensor tmp = Tensor::empty({M, R});
        dnnl_sgemm('N', 'T', M, R, in, 1.f, x.f32(), in, t.down.f32(), in, 0.f, tmp.f32(), R);
        dnnl_sgemm('N', 'T', M, out, R, 1.f, tmp.f32(), R, t.up.f32(), R, 1.f, y.f32(), out);
      } else {  // down (or Tucker: 1x1 down, then mid) with the layer's stride/padding, then 1x1 up
        Tensor h = t.mid.defined() ? ops::conv2d(ops::conv2d(x, t.down, Tensor(), 1, 0), t.mid, Tensor(), stride, pad)
                                   : ops::conv2d(x, t.down, Tensor(), stride, pad);
        ops::add_(y, ops::conv2d(h, t.up, Tensor(), 1, 0));
      }
    }
  }
};

// Any other module kind (or a mix with DoRA): y += ΔW x + Δb with ΔW = W' - W.
struct Dense final : nn::Bypass {
  Tensor dw, db;  // ΔW in the weight's shape (f32), Δb [out] or undefined
  void add(const Tensor& x, Tensor& y, int stride, int pad) const override {
    Tensor h = dw.dim() == 4 ? ops::conv2d(x, dw, db, stride, pad) : ops::linear(x, dw, db);
    ops::add_(y, h);
  }
};

// Plain LoRA that runs as low-rank products on a layer with weight shape `w`.
bool low_rank_ok(const Module& m, const Shape& w) {
  if (m.kind != Kind::LoRA || m.dora() || !m.t.count("down") || !m.t.count("up") || m.rank <= 0) return false;
  if (w.size() == 2 || m.t.count("mid") || (w.size() == 4 && w[2] == 1 && w[3] == 1)) return true;
  const Tensor& d = m.t.at("down");  // conv without Tucker: down must carry the layer's kernel
  return w.size() == 4 && d.dim() == 4 && d.size(2) == w[2] && d.size(3) == w[3];
}

Tensor scaled(const Tensor& t, float k, const Shape& shape) {
  Tensor r = ops::scale(t, k);
  return r.reshape(shape);
}

}  // namespace

void Bypasser::apply(const Checkpoint& ck, const std::vector<LoraSpec>& specs) {
  // Group the modules by layer; a layer with any non-plain module runs dense.
  struct Use {
    const Module* m;
    float s;
  };
  std::map<WeightId, std::vector<Use>> layers;  // (target, module) -> uses
  std::set<WeightId> dense;
  for (const LoraSpec& spec : specs)
    for (const Module& m : spec.file.modules) {
      const float s = m.target == Target::UNet ? spec.unet_strength : spec.te_strength;
      const WeightStore& st = store_of(ck, m.target);
      const std::string key = m.module + ".weight";
      if (!st.has(key)) fail("lora", spec.file.path + ": model has no weight '" + key + "'");
      if (st.get(key).shape() != m.shape)
        fail("lora", spec.file.path + ": module '" + m.module + "' was read for another weight shape");
      WeightId id{(int)m.target, m.module};
      layers[id].push_back({&m, s});
      if (!low_rank_ok(m, m.shape) || m.t.count("diff_b")) dense.insert(id);
    }

  std::vector<std::pair<Tensor, std::shared_ptr<const nn::Bypass>>> todo;
  size_t n_low = 0;
  // Dense layers: W' exactly as merging computes it (all LoRAs on that layer, in order).
  if (!dense.empty()) {
    auto original = [&](const WeightId& id) -> const Tensor& {
      return store_of(ck, (Target)id.first).get(id.second);
    };
    auto merged = merged_weights(ck, specs, original,
                                 [&](const Module& m) { return dense.count({(int)m.target, m.module}) > 0; });
    for (const WeightId& id : dense) {
      const WeightStore& st = store_of(ck, (Target)id.first);
      const Tensor& W = st.get(id.second + ".weight");
      auto b = std::make_shared<Dense>();
      auto wi = merged.find({id.first, id.second + ".weight"});
      b->dw = wi != merged.end() ? ops::add(wi->second, ops::scale(W.to(DType::F32), -1.f)).reshape(W.shape())
                                 : Tensor::zeros(W.shape());
      auto bi = merged.find({id.first, id.second + ".bias"});
      if (bi != merged.end()) b->db = ops::add(bi->second, ops::scale(st.get(id.second + ".bias").to(DType::F32), -1.f));
      todo.emplace_back(W, std::move(b));
    }
  }
  for (auto& [id, uses] : layers) {
    if (dense.count(id)) continue;
    const Tensor& W = store_of(ck, (Target)id.first).get(id.second + ".weight");
    auto b = std::make_shared<LowRank>();
    b->conv = W.dim() == 4;
    if (!b->conv) {  // concatenate along the rank: down [R, in], up [out, R]
      const int64_t out = W.size(0), in = W.size(1);
      int64_t R = 0;
      for (auto& u : uses)
        if (u.s != 0) R += u.m->rank;
      if (R == 0) continue;
      Tensor down = Tensor::empty({R, in}), up = Tensor::empty({out, R});
      int64_t r0 = 0;
      for (auto& u : uses) {
        if (u.s == 0) continue;
        const int64_t r = u.m->rank;
        const Tensor& d = u.m->t.at("down");
        const Tensor& p = u.m->t.at("up");
        if (d.numel() != r * in || p.numel() != out * r)
          fail("lora", "module '" + id.second + "': factor shapes do not match the layer");
        std::memcpy(down.f32() + r0 * in, d.f32(), sizeof(float) * r * in);
        const float k = u.s * u.m->scale;
        for (int64_t o = 0; o < out; o++)
          for (int64_t j = 0; j < r; j++) up.f32()[o * R + r0 + j] = k * p.f32()[o * r + j];
        r0 += r;
      }
      b->terms.push_back({down, Tensor(), up});
    } else {
      const int64_t out = W.size(0), in = W.size(1), kh = W.size(2), kw = W.size(3);
      for (auto& u : uses) {
        if (u.s == 0) continue;
        const int64_t r = u.m->rank;
        const bool tucker = u.m->t.count("mid") > 0;
        LowRank::Term t;
        t.down = u.m->t.at("down").reshape(tucker ? Shape{r, in, 1, 1} : Shape{r, in, kh, kw});
        if (tucker) t.mid = u.m->t.at("mid").reshape({r, r, kh, kw});
        t.up = scaled(u.m->t.at("up"), u.s * u.m->scale, {out, r, 1, 1});
        b->terms.push_back(std::move(t));
      }
      if (b->terms.empty()) continue;
    }
    todo.emplace_back(W, std::move(b));
    n_low++;
  }
  // Nothing above changed any state; now swap.
  remove();
  nn::set_bypasses(todo);
  for (auto& [w, b] : todo) weights_.push_back(w);
  n_low_rank_ = n_low;
}

void Bypasser::remove() {
  if (weights_.empty()) return;
  std::vector<std::pair<Tensor, std::shared_ptr<const nn::Bypass>>> off;
  for (const Tensor& w : weights_) off.emplace_back(w, nullptr);
  nn::set_bypasses(off);
  weights_.clear();
  n_low_rank_ = 0;
}

}  // namespace easel::lora
