// OpenCV helpers shared by the openpose_*.cpp files (internal; openpose.h stays OpenCV-free for the tests).
#pragma once
#include <opencv2/core.hpp>

#include "io/image.h"

namespace easel::pp::openpose {

// controlnet_aux open_pose/util.py smart_resize(x, (Ht, Wt)) for a 2-d float map or a 3-channel image:
// cv2.resize to (int(Wt), int(Ht)), INTER_AREA when (Ht + Wt) / (H + W) < 1, else INTER_LANCZOS4.
// (smart_resize_k(x, fx, fy) is smart_resize(x, (H * fy, W * fx)).) Throws when the target is empty.
cv::Mat smart_resize(const cv::Mat& x, double Ht, double Wt);
cv::Mat to_mat(const Image& im);    // 3-channel Image -> CV_8UC3 (copy)
Image to_image(const cv::Mat& m);  // CV_8UC3 -> Image (copy)

}  // namespace easel::pp::openpose
