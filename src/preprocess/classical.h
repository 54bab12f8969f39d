// Classical (weight-free) preprocessors on OpenCV matrices; internal to src/preprocess.
// Each takes the input as 3-channel RGB (HWC3 already applied), processes it the way the
// reference annotator does, and returns an 8-bit RGB guide. See preprocess.h for references.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <opencv2/core.hpp>

namespace easel::pp {

using Params = std::map<std::string, double>;  // validated, defaults filled in

// A1111's resize_image_with_pad: short side -> res (INTER_CUBIC up, INTER_AREA down, sizes
// rounded half to even like np.round), then edge padding to a multiple of 64 (bottom/right).
struct Padded {
  cv::Mat img;  // padded, CV_8UC3
  int h = 0, w = 0;  // size before padding
  cv::Mat crop(const cv::Mat& m) const { return m(cv::Rect(0, 0, w, h)).clone(); }
};
Padded resize_with_pad(const cv::Mat& rgb, int res);

cv::Mat canny(const cv::Mat& rgb, int res, const Params& p);
cv::Mat blur(const cv::Mat& rgb, int res, const Params& p);
cv::Mat invert(const cv::Mat& rgb, int res, const Params& p);
cv::Mat grayscale(const cv::Mat& rgb, int res, const Params& p);
cv::Mat recolor_luminance(const cv::Mat& rgb, int res, const Params& p);
cv::Mat recolor_intensity(const cv::Mat& rgb, int res, const Params& p);
cv::Mat tile_resample(const cv::Mat& rgb, int res, const Params& p);
cv::Mat canny_aux(const cv::Mat& rgb, int res, const Params& p);
cv::Mat lineart_standard_aux(const cv::Mat& rgb, int res, const Params& p);
cv::Mat gradient(const cv::Mat& rgb, int res, const Params& p);
cv::Mat threshold(const cv::Mat& rgb, int res, const Params& p);
cv::Mat scribble_xdog(const cv::Mat& rgb, int res, const Params& p);
cv::Mat lineart_standard(const cv::Mat& rgb, int res, const Params& p);
cv::Mat shuffle(const cv::Mat& rgb, int res, const Params& p, uint64_t seed);
cv::Mat color(const cv::Mat& rgb, int res, const Params& p);

}  // namespace easel::pp
