// OpenPose preprocessors (body, hand, face), ports of controlnet_aux 0.0.10 / sd-webui-controlnet's
// annotator/openpose (CMU OpenPose via Hzzone/pytorch-openpose, edited by lllyasviel):
//   https://github.com/huggingface/controlnet_aux/tree/master/src/controlnet_aux/open_pose
//   https://github.com/Mikubill/sd-webui-controlnet/tree/main/annotator/openpose
// Networks: bodypose_model (VGG-19 front + 6 two-branch stages: 38 part-affinity fields, 19 heatmaps),
// handpose_model (22 heatmaps) and FaceNet (71 heatmaps), run on easel's ops with the original weight
// files (body_pose_model.pth, hand_pose_model.pth, facenet.pth from lllyasviel/Annotators); layer widths are
// read from the weight shapes. Post-processing (OpenCV resizes with the reference's flags, scipy's
// gaussian_filter, peak finding, PAF grouping, hand/face boxes, drawing) follows the reference line by line,
// in the same floating-point precision. Internal to src/preprocess and the tests (no OpenCV in this header).
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/image.h"
#include "io/weights.h"

namespace easel::pp::openpose {

// ---- networks ----
struct Conv {  // one conv layer (+ ReLU), named after its checkpoint key
  Tensor weight, bias;  // [O, I, k, k], [O]
  int pad = 0;
  bool relu = true;
};

// bodypose_model. forward: x [1, 3, H, W] (BGR / 256 - 0.5, H and W multiples of 8)
// -> {Mconv7_stage6_L1 [1, 38, H/8, W/8] (PAFs), Mconv7_stage6_L2 [1, 19, H/8, W/8] (heatmaps)}.
struct BodyNet {
  std::vector<Conv> model0;                 // conv1_1 .. conv4_4_CPM (max pools after conv1_2, conv2_2, conv3_4)
  std::array<std::vector<Conv>, 6> l1, l2;  // stage 1: conv5_*_CPM_L1/L2; stages 2-6: Mconv*_stageN_L1/L2
  void load(const WeightStore& w);
  std::pair<Tensor, Tensor> forward(const Tensor& x) const;
};

// handpose_model (22 outputs) and FaceNet (71 outputs): the same layer names and structure.
// forward: x [1, 3, H, W] -> the last stage [1, n_out, H/8, W/8].
struct CpmNet {
  std::vector<Conv> front;                  // conv1_1 .. conv5_3_CPM (pools after conv1_2, conv2_2, conv3_4)
  std::array<std::vector<Conv>, 6> stages;  // stage 1: conv6_1_CPM, conv6_2_CPM; stages 2-6: Mconv1..7_stageN
  int n_out = 0;
  // expect_out: 22 (hand) or 71 (face); a file with the other count (or a body model) is refused by name.
  void load(const WeightStore& w, int expect_out);
  Tensor forward(const Tensor& x) const;
};

// The networks as callables (the real ones, or fakes in tests).
struct Nets {
  std::function<std::pair<Tensor, Tensor>(const Tensor&)> body;  // -> {paf, heatmap}
  std::function<Tensor(const Tensor&)> hand, face;              // -> last stage
};

// ---- results ----
// Normalised coordinates (x / canvas width, y / canvas height), as the reference's PoseResult. Body keypoints
// are float64 (numpy), hand and face keypoints float32 values (the reference's float32 peak arrays).
struct Keypoint {
  double x = 0, y = 0;
};
struct Pose {
  std::array<std::optional<Keypoint>, 18> body;  // COCO-18 order; nullopt: not detected
  double total_score = 0, total_parts = 0;
  std::optional<std::vector<Keypoint>> left_hand, right_hand, face;
};

// Body.__call__: candidate rows [x, y, score, id]; subset rows [18 candidate indices (-1: none), score, parts].
struct BodyResult {
  std::vector<std::array<double, 4>> candidate;
  std::vector<std::array<double, 20>> subset;
};

// Body.__call__ on a BGR image (3 channels).
BodyResult body_estimate(const Image& bgr, const Nets& nets);
// Hand.__call__ on a BGR crop: 21 peaks [x, y] in crop pixels ([0, 0]: none).
std::vector<std::array<int, 2>> hand_estimate(const Image& bgr, const Nets& nets);
// Face.__call__ + compute_peaks_from_heatmaps on a BGR crop: peaks [x, y] in crop pixels (parts without a
// value above 0.05 are left out, as the reference does).
std::vector<std::array<int, 2>> face_estimate(const Image& bgr, const Nets& nets);
// OpenposeDetector.detect_poses on an RGB image.
std::vector<Pose> detect_poses(const Image& rgb, const Nets& nets, bool include_hand, bool include_face);
// draw_poses: an H x W RGB canvas.
Image draw_poses(const std::vector<Pose>& poses, int H, int W, bool body, bool hand, bool face);
// encode_poses_as_dict as JSON text (OpenPose format; canvas H x W, keypoints normalised to it).
std::string encode_poses_json(const std::vector<Pose>& poses, int H, int W);

// A1111's run: resize_image_with_pad(rgb, res) -> detect_poses on the padded image -> draw -> crop the padding.
// json (when set): encode_poses_json with the padded canvas, as A1111's json_pose_callback receives it.
Image run(const Image& rgb, int res, const Nets& nets, bool body, bool hand, bool face, std::string* json);

// Loaded networks (cached by path; the nets stay alive while a returned Nets holds them).
Nets load_nets(const std::string& body_path, const std::string& hand_path, const std::string& face_path);

}  // namespace easel::pp::openpose
