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

// Parses a torch zip checkpoint held in memory. `name` is used in messages: "[ckpt] NAME: ...".
// Without `owner`, `data` must stay valid during the call only and tensors own copies of their
// storages. With `owner` (e.g. the file's memory map, which it keeps alive), storages of STORED
// entries (torch writes them so, 64-byte aligned) are viewed in place, nothing copied; deflated
// entries are still read into buffers.
WeightStore parse_torch_zip(const uint8_t* data, size_t size, const std::string& name,
                            std::shared_ptr<void> owner = nullptr);
// True for the pre-1.6 torch.save format (a bare pickle stream starting with torch's magic number).
bool is_legacy_torch(const uint8_t* data, size_t size);

}  // namespace easel
