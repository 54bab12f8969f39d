// Restricted pickle VM for torch state dicts (data.pkl of a torch zip checkpoint). Builds plain
// values and tensor views only; nothing is ever executed. Globals outside the allow-list are
// refused naming the file and the global.
//   https://github.com/python/cpython/blob/main/Lib/pickletools.py
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "io/weights.h"

namespace easel {

// Bytes of one storage (archive entry data/<key>), kept alive by `owner`.
struct TorchStorage {
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  std::shared_ptr<void> owner;
};

// Returns the storage `key` holding at least `nbytes` bytes; throws naming the entry.
using StorageLoader = std::function<TorchStorage(const std::string& key, size_t nbytes)>;

// Runs the restricted VM on `pkl` and flattens the state dict into a WeightStore:
//  - the top-level dict, or its 'state_dict' (else 'model', else 'module') entry when that is a dict;
//  - nested dicts/lists flattened with '.' ("a.b.0");
//  - top-level scalars (epoch, global_step, ...) as metadata strings.
// Allowed globals: collections.OrderedDict, torch._utils._rebuild_tensor(_v2)/_rebuild_parameter,
// torch.*Storage, torch.Size; inert (opaque values, never interpreted): numpy scalars/arrays/dtypes,
// _codecs.encode, set, torch dtypes/device, pytorch_lightning.* training state. Anything else is refused.
// Tensors keep their stored dtype (f64 becomes f32, bool becomes u8); contiguous ones are views into
// their storage, strided ones are copied. Only tensors in the chosen dict load their storage.
// `name` is used in messages: "[ckpt] NAME: ...".
WeightStore unpickle_state_dict(const uint8_t* pkl, size_t size, const StorageLoader& load, const std::string& name);

}  // namespace easel
