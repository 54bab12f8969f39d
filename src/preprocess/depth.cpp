// Placeholder: the depth preprocessors register here (see registry.h).
#include "preprocess/registry.h"

namespace easel::pp {

void add_depth(std::vector<Entry>&) {}

}  // namespace easel::pp
