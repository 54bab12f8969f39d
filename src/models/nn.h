// Leaf modules shared by every model. Members are named after their checkpoint keys
// ("weight", "bias"); load() takes the module's key prefix and checks shapes.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/weights.h"
#include "ops/ops.h"

namespace easel::nn {

inline std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Run-time additions beside a layer (LoRA bypass mode, lora/lora_bypass.h): y += f(x), registered for
// a weight tensor (by its data address; the registrant keeps the tensor alive) and applied by Linear
// and Conv2d on every call. Register between generations, not while a model runs.
class Bypass {
 public:
  virtual ~Bypass() = default;
  // x: the layer's input, y: its output (stride/pad: the Conv2d's; 0 for Linear).
  virtual void add(const Tensor& x, Tensor& y, int stride, int pad) const = 0;
};
// Registers (or, for a null addition, removes) each weight's addition, all in one table update.
void set_bypasses(const std::vector<std::pair<Tensor, std::shared_ptr<const Bypass>>>& changes);
const Bypass* find_bypass(const Tensor& weight);                         // null when none (fast when empty)
size_t bypass_count();

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
  void load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool has_bias = true) {
    weight = w.get(join(prefix, "weight"), {out, in});
    bias = has_bias ? w.get(join(prefix, "bias"), {out}) : Tensor();
  }
  int64_t in() const { return weight.size(1); }
  int64_t out() const { return weight.size(0); }
  Tensor operator()(const Tensor& x) const {
    Tensor y = ops::linear(x, weight, bias);
    if (const Bypass* b = find_bypass(weight)) b->add(x, y, 0, 0);
    return y;
  }
};

struct Conv2d {
  Tensor weight;  // [out, in, k, k]
  Tensor bias;    // [out]
  int stride = 1, pad = 0;
  void load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int k,
            int stride_ = 1, int pad_ = -1, bool has_bias = true) {
    weight = w.get(join(prefix, "weight"), {out, in, k, k});
    bias = has_bias ? w.get(join(prefix, "bias"), {out}) : Tensor();
    stride = stride_;
    pad = pad_ < 0 ? k / 2 : pad_;
  }
  Tensor operator()(const Tensor& x) const {
    Tensor y = ops::conv2d(x, weight, bias, stride, pad);
    if (const Bypass* b = find_bypass(weight)) b->add(x, y, stride, pad);
    return y;
  }
};

struct GroupNorm {
  Tensor weight, bias;  // [C]
  int groups = 32;
  float eps = 1e-5f;
  void load(const WeightStore& w, const std::string& prefix, int64_t c, int groups_ = 32, float eps_ = 1e-5f) {
    weight = w.get(join(prefix, "weight"), {c});
    bias = w.get(join(prefix, "bias"), {c});
    groups = groups_;
    eps = eps_;
  }
  Tensor operator()(const Tensor& x, bool silu = false) const {
    return ops::group_norm(x, groups, weight, bias, eps, silu);
  }
};

struct LayerNorm {
  Tensor weight, bias;  // [C]
  float eps = 1e-5f;
  void load(const WeightStore& w, const std::string& prefix, int64_t c, float eps_ = 1e-5f) {
    weight = w.get(join(prefix, "weight"), {c});
    bias = w.get(join(prefix, "bias"), {c});
    eps = eps_;
  }
  Tensor operator()(const Tensor& x) const { return ops::layer_norm(x, weight, bias, eps); }
};

}  // namespace easel::nn
