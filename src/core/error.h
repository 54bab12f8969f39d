// Library errors: exceptions whose message names the component and the file/key/op.
// e.g. "[safetensors] model.safetensors: tensor 'x' extends past end of file".
// The library never calls exit(); the CLI and C API turn these into messages/status.
#pragma once
#include <stdexcept>
#include <string>

namespace easel {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Builds "[where] what".
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw Error("[" + where + "] " + what);
}

#define EASEL_CHECK(cond, where, what) \
  do {                                 \
    if (!(cond)) ::easel::fail(where, what); \
  } while (0)

}  // namespace easel
