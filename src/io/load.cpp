// load_weights: picks the reader from the file's content, not its name.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "io/safetensors.h"
#include "io/torch_zip.h"
#include "io/weights.h"

namespace easel {

WeightStore load_weights(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) fail("io", path + ": cannot open: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("io", path + ": is a directory, not a weight file");
  const uint8_t* d;
  size_t n;
  auto owner = map_file(path, &d, &n);
  if (n == 0) fail("io", path + ": file is empty");
  if (n >= 4 && std::memcmp(d, "PK\x03\x04", 4) == 0) return parse_torch_zip(d, n, path, owner);
  if (n >= 9 && d[8] == '{') return parse_safetensors(d, n, owner, path);
  if (is_legacy_torch(d, n))
    fail("ckpt", path + ": legacy torch format (saved before torch 1.6) is not supported; re-save it with "
                        "torch>=1.6 (torch.save(torch.load(f), f2)) or convert it to .safetensors");
  fail("io", path + ": not a checkpoint (neither safetensors nor a torch zip archive)");
}

}  // namespace easel
