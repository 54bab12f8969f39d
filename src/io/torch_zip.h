// PyTorch checkpoints (.ckpt/.pt/.pth/.bin) as written by torch.save (>= 1.6): a zip archive
//   <prefix>/data.pkl        pickled object (a state dict), storages as persistent ids
//   <prefix>/data/<key>      raw little-endian bytes of each storage
//   <prefix>/byteorder       "little" (optional)
// Read with libzip; the pickle goes through the restricted VM in io/pickle.h (nothing is executed).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "io/weights.h"

namespace easel {

// Parses a torch zip checkpoint held in memory (`data` must stay valid during the call; tensors own
// copies of their storages). `name` is used in messages: "[ckpt] NAME: ...".
WeightStore parse_torch_zip(const uint8_t* data, size_t size, const std::string& name);
// True for the pre-1.6 torch.save format (a bare pickle stream starting with torch's magic number).
bool is_legacy_torch(const uint8_t* data, size_t size);

}  // namespace easel
