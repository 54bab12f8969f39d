// Placeholder until the torch zip + pickle reader lands: refuses clearly.
#include "io/weights.h"

namespace easel {

WeightStore load_torch_zip(const uint8_t*, size_t, std::shared_ptr<void>, const std::string& name) {
  fail("ckpt", name + ": torch zip checkpoints are not supported yet; convert to .safetensors");
}

}  // namespace easel
