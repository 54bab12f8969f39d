// Placeholder: the segmentation preprocessors register here (see registry.h).
#include "preprocess/registry.h"

namespace easel::pp {

void add_segmentation(std::vector<Entry>&) {}

}  // namespace easel::pp
