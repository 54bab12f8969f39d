// Placeholder: the openpose preprocessors register here (see registry.h).
#include "preprocess/registry.h"

namespace easel::pp {

void add_openpose(std::vector<Entry>&) {}

}  // namespace easel::pp
