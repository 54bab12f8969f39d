// Leaf modules shared by every model. Members are named after their checkpoint keys
// ("weight", "bias"); load() takes the module's key prefix and checks shapes.
#pragma once
#include <string>

#include "io/weights.h"
#include "ops/ops.h"

namespace easel::nn {

inline std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
  void load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool has_bias = true) {
    weight = w.get(join(prefix, "weight"), {out, in});
    bias = has_bias ? w.get(join(prefix, "bias"), {out}) : Tensor();
  }
  int64_t in() const { return weight.size(1); }
  int64_t out() const { return weight.size(0); }
  Tensor operator()(const Tensor& x) const { return ops::linear(x, weight, bias); }
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
  Tensor operator()(const Tensor& x) const { return ops::conv2d(x, weight, bias, stride, pad); }
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
