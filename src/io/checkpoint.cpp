#include "io/checkpoint.h"

namespace easel {

Checkpoint open_checkpoint(const std::string& path, const CheckpointOverrides&) {
  fail("checkpoint", path + ": not implemented yet");
}

std::string describe_checkpoint(const std::string& path) {
  fail("checkpoint", path + ": not implemented yet");
}

}  // namespace easel
