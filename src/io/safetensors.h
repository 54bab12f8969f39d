// safetensors reader/writer. https://github.com/huggingface/safetensors#format
// Layout: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section. Tensors are views into a read-only memory map (no copy).
#pragma once
#include <map>
#include <memory>
#include <string>

#include "io/weights.h"

namespace easel {

// Parses a safetensors image held in `data` (kept alive by `owner`). `name` is used in messages.
WeightStore parse_safetensors(const uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name);
WeightStore load_safetensors(const std::string& path);
// Writes atomically (temp file + rename); errors name the file and the reason (e.g. disk full).
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
bool looks_like_safetensors(const uint8_t* data, size_t size);

// Drops the resident pages of every live weight-file mapping (RSS falls; data stays valid and is
// re-read from the page cache on the next access). Used between phases in low-memory mode.
void release_mapped_pages();

// Read-only memory map of a whole file; throws with the file name on failure.
std::shared_ptr<void> map_file(const std::string& path, const uint8_t** data, size_t* size);

}  // namespace easel
