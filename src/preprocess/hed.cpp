// Placeholder: the hed preprocessors register here (see registry.h).
#include "preprocess/registry.h"

namespace easel::pp {

void add_hed(std::vector<Entry>&) {}

}  // namespace easel::pp
