#include "io/weights.h"

namespace easel {

const Tensor& WeightStore::get(const std::string& key) const {
  auto it = tensors.find(key);
  if (it == tensors.end()) fail("weights", source + ": missing tensor '" + key + "'");
  used_.insert(key);
  return it->second;
}

const Tensor& WeightStore::get(const std::string& key, const Shape& expect) const {
  const Tensor& t = get(key);
  if (t.shape() != expect)
    fail("weights", source + ": tensor '" + key + "' has shape " + shape_str(t.shape()) + ", expected " +
                        shape_str(expect));
  return t;
}

Tensor WeightStore::get_opt(const std::string& key, const Shape& expect) const {
  if (!has(key)) return Tensor();
  return get(key, expect);
}

std::vector<std::string> WeightStore::keys_with_prefix(const std::string& prefix) const {
  std::vector<std::string> out;
  for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    out.push_back(it->first);
  return out;
}

WeightStore WeightStore::sub(const std::string& prefix) const {
  WeightStore s;
  s.source = source;
  s.metadata = metadata;
  for (auto& k : keys_with_prefix(prefix)) s.tensors[k.substr(prefix.size())] = tensors.at(k);
  return s;
}

std::vector<std::string> WeightStore::unused() const {
  std::vector<std::string> out;
  for (auto& [k, v] : tensors)
    if (!used_.count(k)) out.push_back(k);
  return out;
}

}  // namespace easel
