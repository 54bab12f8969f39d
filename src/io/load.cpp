// load_weights: picks the reader from the file's content, not its name.
#include <filesystem>

#include "io/safetensors.h"
#include "io/weights.h"

namespace easel {

WeightStore load_torch_zip(const uint8_t* data, size_t size, std::shared_ptr<void> owner, const std::string& name);

WeightStore load_weights(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("io", path + ": no such file");
  if (std::filesystem::is_directory(path, ec)) fail("io", path + ": is a directory, not a weight file");
  const uint8_t* d;
  size_t n;
  auto owner = map_file(path, &d, &n);
  if (n == 0) fail("io", path + ": file is empty");
  if (n >= 4 && std::memcmp(d, "PK\x03\x04", 4) == 0) return load_torch_zip(d, n, owner, path);
  if (n >= 9 && d[8] == '{') return parse_safetensors(d, n, owner, path);
  fail("io", path + ": not a checkpoint (neither safetensors nor a torch zip archive)");
}

}  // namespace easel
