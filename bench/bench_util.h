// Shared by the benchmark programs: peak RSS, seeded random tensors, SDXL added conditioning, the
// preprocessor benchmarks' photo.
#pragma once
#include <sys/resource.h>

#include <map>
#include <memory>
#include <random>
#include <string>

#include "io/image.h"
#include "models/config.h"
#include "models/unet.h"

namespace easel::bench {

inline double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / (1024.0 * 1024.0);  // KiB -> GiB
}

inline Tensor randn(const Shape& s, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n;
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = n(g);
  return t;
}

// SDXL added conditioning for a batch of 2 at size x size: pooled text embeds [2, proj] and time ids
// [2, 6] (base: original size, crop (0, 0), target size) or [2, 5] (refiner: aesthetic score last).
struct AddedCond {
  Tensor text_embeds, time_ids;
  UNetExtras extras;
};
inline std::unique_ptr<AddedCond> added_cond(const ModelConfig& c, float size) {
  if (c.unet.addition_embed_type != "text_time") return nullptr;
  auto a = std::make_unique<AddedCond>();
  int64_t proj = c.text_2.projection_dim;
  int64_t n = (c.unet.projection_class_embeddings_input_dim - proj) / c.unet.addition_time_embed_dim;
  a->text_embeds = randn({2, proj}, 4);
  a->time_ids = Tensor::empty({2, n});
  std::vector<float> ids = {size, size, 0.f, 0.f, size, size};
  if (n == 5) ids = {size, size, 0.f, 0.f, 6.f};
  for (int64_t b = 0; b < 2; b++)
    for (int64_t i = 0; i < n; i++) a->time_ids.f32()[b * n + i] = ids.at(i);
  a->extras.text_embeds = &a->text_embeds;
  a->extras.time_ids = &a->time_ids;
  return a;
}

// The chelsea photo (scikit-image, CC0) from the parity fixtures, resized (PIL-exact Lanczos) to SxS; cached.
// EASEL_FIXTURES is defined for every bench target.
inline const Image& photo(int s) {
  static std::map<int, Image> cache;
  auto it = cache.find(s);
  if (it != cache.end()) return it->second;
  Image src = read_image(std::string(EASEL_FIXTURES) + "/preprocess/inputs/chelsea.png", 3);
  return cache[s] = resize_image(src, s, s);
}

}  // namespace easel::bench
