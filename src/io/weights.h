// WeightStore: named tensors from a checkpoint file (or several), plus file metadata.
// Tensors borrow the file's memory map where the dtype is kept; nothing is copied eagerly.
// Lookups check shapes and throw Errors that name the file and the key.
#pragma once
#include <map>
#include <set>
#include <string>

#include "core/tensor.h"

namespace easel {

class WeightStore {
 public:
  std::string source;  // file (or folder) name, for messages
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // safetensors __metadata__

  bool has(const std::string& key) const { return tensors.count(key) != 0; }
  // The tensor under `key`; throws "[weights] SRC: missing tensor 'key'".
  const Tensor& get(const std::string& key) const;
  // As get(), and checks the shape: "tensor 'key' has shape [..], expected [..]".
  const Tensor& get(const std::string& key, const Shape& expect) const;
  // Optional tensor: undefined Tensor when absent; shape checked when present.
  Tensor get_opt(const std::string& key, const Shape& expect) const;
  // Keys starting with prefix (sorted).
  std::vector<std::string> keys_with_prefix(const std::string& prefix) const;
  // A new store holding the tensors under `prefix`, with the prefix stripped.
  WeightStore sub(const std::string& prefix) const;
  // Keys never fetched through get/get_opt (for "unused key" reports).
  std::vector<std::string> unused() const;

 private:
  mutable std::set<std::string> used_;
};

// Loads .safetensors, .ckpt/.pt/.pth/.bin (torch zip + pickle) by content sniffing.
WeightStore load_weights(const std::string& path);

}  // namespace easel
