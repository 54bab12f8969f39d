// Preprocessor registry internals (src/preprocess only): each entry pairs the public info with the
// function that runs it. Neural families register their entries from their own files.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "preprocess/classical.h"
#include "preprocess/preprocess.h"

namespace easel::pp {

// rgb: CV_8UC3 (HWC3 applied); res: processor resolution; p: validated params with defaults.
// Returns the CV_8UC3 RGB guide.
using Fn = std::function<cv::Mat(const cv::Mat& rgb, int res, const Params& p, const PreprocessRun& run)>;

struct Entry {
  PreprocessorInfo info;
  Fn fn;
};

// Neural families (one file each): append their entries.
void add_openpose(std::vector<Entry>& v);      // openpose.cpp
void add_depth(std::vector<Entry>& v);         // depth.cpp (Depth Anything V2, MiDaS DPT-Hybrid)
void add_segmentation(std::vector<Entry>& v);  // segmentation.cpp (UperNet-ConvNeXt ADE20k)
void add_hed(std::vector<Entry>& v);           // hed.cpp

// The weight file `file` (one of info.weight_files) for preprocessor `who`: run.model_path itself when it is a
// file named `file` (or any file when the preprocessor has a single weight file), else `file` inside
// run.model_path (a directory), $EASEL_ANNOTATOR_DIR, ./models/annotators. Throws an Error naming the file,
// the places searched and where the original comes from (`origin`, e.g. "lllyasviel/Annotators").
std::string find_weights(const PreprocessorInfo& who, const std::string& file, const PreprocessRun& run);

}  // namespace easel::pp
