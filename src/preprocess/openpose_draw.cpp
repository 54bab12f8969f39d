// OpenPose: hand/face boxes from the body keypoints, pose assembly, drawing and the JSON, ported from
// controlnet_aux 0.0.10 open_pose/__init__.py (detect_poses, detect_hands, detect_face, draw_poses) and util.py
// (handDetect, faceDetect, draw_bodypose, draw_handpose, draw_facepose); the JSON is sd-webui-controlnet's
// encode_poses_as_dict. Drawing uses OpenCV's ellipse2Poly / fillConvexPoly / line / circle (LINE_8) as cv2 does,
// with the reference's arithmetic: float64 body coordinates, float32 hand/face coordinates (numpy float32 peaks).
#pragma GCC optimize("fp-contract=off")
#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "preprocess/classical.h"
#include "preprocess/openpose.h"
#include "preprocess/openpose_cv.h"

namespace easel::pp::openpose {

namespace {

// Body keypoint in pixels (format_body_result), before detect_poses normalises it.
struct Px {
  double x, y;
};
using BodyPx = std::array<std::optional<Px>, 18>;

struct Box {
  int x, y, w;
  bool is_left;
};

// util.handDetect: boxes for the left (shoulder 5, elbow 6, wrist 7) then right (2, 3, 4) hand.
std::vector<Box> hand_detect(const BodyPx& kp, int image_height, int image_width) {
  const double ratioWristElbow = 0.33;
  std::vector<Box> out;
  const int arms[2][3] = {{5, 6, 7}, {2, 3, 4}};
  for (int a = 0; a < 2; a++) {
    const auto &s = kp[arms[a][0]], &e = kp[arms[a][1]], &wr = kp[arms[a][2]];
    if (!s || !e || !wr) continue;
    const double x1 = s->x, y1 = s->y, x2 = e->x, y2 = e->y, x3 = wr->x, y3 = wr->y;
    double x = x3 + ratioWristElbow * (x3 - x2);
    double y = y3 + ratioWristElbow * (y3 - y2);
    const double dWE = std::sqrt(std::pow(x3 - x2, 2) + std::pow(y3 - y2, 2));
    const double dES = std::sqrt(std::pow(x2 - x1, 2) + std::pow(y2 - y1, 2));
    double width = 1.5 * std::max(dWE, 0.9 * dES);
    x -= width / 2;
    y -= width / 2;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    double width1 = width, width2 = width;
    if (x + width > image_width) width1 = image_width - x;
    if (y + width > image_height) width2 = image_height - y;
    width = std::min(width1, width2);
    if (width >= 20) out.push_back({(int)x, (int)y, (int)width, a == 0});
  }
  return out;
}

// util.faceDetect: nose 0, eyes 14/15, ears 16/17. (The bounds test uses `width`, not the box's 2 * width,
// so the crop may be cut by the image border: numpy slicing clamps it.)
std::optional<Box> face_detect(const BodyPx& kp, int image_height, int image_width) {
  const auto& head = kp[0];
  if (!head || (!kp[14] && !kp[15] && !kp[16] && !kp[17])) return std::nullopt;
  double width = 0.0;
  const double x0 = head->x, y0 = head->y;
  for (int i = 14; i <= 17; i++) {
    if (!kp[i]) continue;
    const double d = std::max(std::abs(x0 - kp[i]->x), std::abs(y0 - kp[i]->y));
    width = std::max(width, d * (i < 16 ? 3.0 : 1.5));
  }
  double x = x0 - width, y = y0 - width;
  if (x < 0) x = 0;
  if (y < 0) y = 0;
  double width1 = width * 2, width2 = width * 2;
  if (x + width > image_width) width1 = image_width - x;
  if (y + width > image_height) width2 = image_height - y;
  width = std::min(width1, width2);
  if (width >= 20) return Box{(int)x, (int)y, (int)width, false};
  return std::nullopt;
}

// oriImg[y:y+h, x:x+w] with numpy's clamping.
Image crop(const Image& im, int x, int y, int w, int h) {
  const int x1 = std::min(x + w, im.width), y1 = std::min(y + h, im.height);
  Image out;
  out.width = std::max(0, x1 - x), out.height = std::max(0, y1 - y), out.channels = 3;
  out.pixels.resize((size_t)out.width * out.height * 3);
  for (int r = 0; r < out.height; r++)
    std::copy_n(im.row(y + r) + (size_t)x * 3, (size_t)out.width * 3, out.row(r));
  return out;
}

// detect_hands / detect_face: peaks (float32) -> (peak + offset) / size, -1 / size where the peak is 0.
std::vector<Keypoint> to_keypoints(const std::vector<std::array<int, 2>>& peaks, int ox, int oy, int W, int H) {
  std::vector<Keypoint> v;
  for (auto& p : peaks) {
    const float px = (float)p[0], py = (float)p[1];
    const float x = (px < 1e-6f ? -1.0f : px + (float)ox) / (float)W;
    const float y = (py < 1e-6f ? -1.0f : py + (float)oy) / (float)H;
    v.push_back({(double)x, (double)y});
  }
  return v;
}

// COCO-18 skeleton (1-based) and colours of draw_bodypose.
constexpr int kLimbSeq[17][2] = {{2, 3}, {2, 6},  {3, 4},   {4, 5},   {6, 7},   {7, 8},  {2, 9},  {9, 10}, {10, 11},
                                 {2, 12}, {12, 13}, {13, 14}, {2, 1}, {1, 15}, {15, 17}, {1, 16}, {16, 18}};
constexpr int kColors[18][3] = {{255, 0, 0},   {255, 85, 0},  {255, 170, 0}, {255, 255, 0}, {170, 255, 0},
                                {85, 255, 0},  {0, 255, 0},   {0, 255, 85},  {0, 255, 170}, {0, 255, 255},
                                {0, 170, 255}, {0, 85, 255},  {0, 0, 255},   {85, 0, 255},  {170, 0, 255},
                                {255, 0, 255}, {255, 0, 170}, {255, 0, 85}};

void draw_body(cv::Mat& canvas, const Pose& pose) {
  const int H = canvas.rows, W = canvas.cols;
  const int stickwidth = 4;
  for (int l = 0; l < 17; l++) {
    const auto &k1 = pose.body[kLimbSeq[l][0] - 1], &k2 = pose.body[kLimbSeq[l][1] - 1];
    if (!k1 || !k2) continue;
    const double Y0 = k1->x * double(W), Y1 = k2->x * double(W);
    const double X0 = k1->y * double(H), X1 = k2->y * double(H);
    const double mX = (0.0 + X0 + X1) / 2, mY = (0.0 + Y0 + Y1) / 2;  // np.mean: pairwise sum / 2
    const double length = std::pow(std::pow(X0 - X1, 2) + std::pow(Y0 - Y1, 2), 0.5);
    const double angle = std::atan2(X0 - X1, Y0 - Y1) * (180.0 / M_PI);  // math.degrees
    std::vector<cv::Point> poly;
    cv::ellipse2Poly(cv::Point((int)mY, (int)mX), cv::Size((int)(length / 2), stickwidth), (int)angle, 0, 360, 1,
                     poly);
    const int* c = kColors[l];
    cv::fillConvexPoly(canvas, poly, cv::Scalar((int)(c[0] * 0.6), (int)(c[1] * 0.6), (int)(c[2] * 0.6)));
  }
  for (int i = 0; i < 18; i++) {
    if (!pose.body[i]) continue;
    const int x = (int)(pose.body[i]->x * W), y = (int)(pose.body[i]->y * H);
    cv::circle(canvas, cv::Point(x, y), 4, cv::Scalar(kColors[i][0], kColors[i][1], kColors[i][2]), cv::FILLED);
  }
}

// matplotlib.colors.hsv_to_rgb([h, 1, 1]) * 255.
cv::Scalar hsv_color(double h) {
  const double h6 = h * 6.0;
  const int i = (int)h6;
  const double f = h6 - i, s = 1.0, v = 1.0;
  const double p = v * (1.0 - s), q = v * (1.0 - s * f), t = v * (1.0 - s * (1.0 - f));
  double r, g, b;
  switch (i % 6) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
  return cv::Scalar(r * 255, g * 255, b * 255);
}

// int(np.float32(k) * W): float32 product, truncated.
int f32px(double k, int W) { return (int)((float)k * (float)W); }

void draw_hand(cv::Mat& canvas, const std::optional<std::vector<Keypoint>>& kps) {
  if (!kps || kps->empty()) return;
  const int H = canvas.rows, W = canvas.cols;
  const double eps = 0.01;
  static const int edges[20][2] = {{0, 1},  {1, 2},   {2, 3},   {3, 4},   {0, 5},   {5, 6},   {6, 7},
                                   {7, 8},  {0, 9},   {9, 10},  {10, 11}, {11, 12}, {0, 13}, {13, 14},
                                   {14, 15}, {15, 16}, {0, 17}, {17, 18}, {18, 19}, {19, 20}};
  const auto& k = *kps;
  for (int ie = 0; ie < 20; ie++) {
    if ((size_t)std::max(edges[ie][0], edges[ie][1]) >= k.size()) continue;
    const Keypoint &k1 = k[edges[ie][0]], &k2 = k[edges[ie][1]];
    const int x1 = f32px(k1.x, W), y1 = f32px(k1.y, H), x2 = f32px(k2.x, W), y2 = f32px(k2.y, H);
    if (x1 > eps && y1 > eps && x2 > eps && y2 > eps)
      cv::line(canvas, cv::Point(x1, y1), cv::Point(x2, y2), hsv_color(ie / 20.0), 2);
  }
  for (const Keypoint& p : k) {
    const int x = f32px(p.x, W), y = f32px(p.y, H);
    if (x > eps && y > eps) cv::circle(canvas, cv::Point(x, y), 4, cv::Scalar(0, 0, 255), cv::FILLED);
  }
}

void draw_face(cv::Mat& canvas, const std::optional<std::vector<Keypoint>>& kps) {
  if (!kps || kps->empty()) return;
  const int H = canvas.rows, W = canvas.cols;
  for (const Keypoint& p : *kps) {
    const int x = f32px(p.x, W), y = f32px(p.y, H);
    if (x > 0.01 && y > 0.01) cv::circle(canvas, cv::Point(x, y), 3, cv::Scalar(255, 255, 255), cv::FILLED);
  }
}

}  // namespace

std::vector<Pose> detect_poses(const Image& rgb, const Nets& nets, bool include_hand, bool include_face) {
  Image bgr = rgb;  // oriImg[:, :, ::-1]
  for (size_t i = 0; i + 2 < bgr.pixels.size(); i += 3) std::swap(bgr.pixels[i], bgr.pixels[i + 2]);
  const int H = bgr.height, W = bgr.width;
  const BodyResult br = body_estimate(bgr, nets);
  std::vector<Pose> poses;
  for (const auto& row : br.subset) {
    BodyPx px;
    for (int i = 0; i < 18; i++) {
      const int ci = (int)row[i];
      if (ci != -1) px[i] = Px{br.candidate[ci][0], br.candidate[ci][1]};
    }
    Pose pose;
    pose.total_score = row[18];
    pose.total_parts = row[19];
    if (include_hand)
      for (const Box& b : hand_detect(px, H, W)) {
        auto kps = to_keypoints(hand_estimate(crop(bgr, b.x, b.y, b.w, b.w), nets), b.x, b.y, W, H);
        (b.is_left ? pose.left_hand : pose.right_hand) = std::move(kps);
      }
    if (include_face)
      if (auto b = face_detect(px, H, W)) {
        auto peaks = face_estimate(crop(bgr, b->x, b->y, b->w, b->w), nets);
        if (!peaks.empty()) pose.face = to_keypoints(peaks, b->x, b->y, W, H);
      }
    for (int i = 0; i < 18; i++)
      if (px[i]) pose.body[i] = Keypoint{px[i]->x / double(W), px[i]->y / double(H)};
    poses.push_back(std::move(pose));
  }
  return poses;
}

Image draw_poses(const std::vector<Pose>& poses, int H, int W, bool body, bool hand, bool face) {
  cv::Mat canvas = cv::Mat::zeros(H, W, CV_8UC3);
  for (const Pose& p : poses) {
    if (body) draw_body(canvas, p);
    if (hand) {
      draw_hand(canvas, p.left_hand);
      draw_hand(canvas, p.right_hand);
    }
    if (face) draw_face(canvas, p.face);
  }
  return to_image(canvas);
}

std::string encode_poses_json(const std::vector<Pose>& poses, int H, int W) {
  using J = nlohmann::ordered_json;
  auto compress = [](const auto& kps) -> J {
    J v = J::array();
    for (const auto& k : kps) {
      if constexpr (std::is_same_v<std::decay_t<decltype(k)>, Keypoint>) {
        v.push_back(k.x), v.push_back(k.y), v.push_back(1.0);
      } else if (k) {
        v.push_back(k->x), v.push_back(k->y), v.push_back(1.0);
      } else {
        v.push_back(0.0), v.push_back(0.0), v.push_back(0.0);
      }
    }
    return v.empty() ? J(nullptr) : v;
  };
  auto opt = [&](const std::optional<std::vector<Keypoint>>& k) { return k ? compress(*k) : J(nullptr); };
  J people = J::array();
  for (const Pose& p : poses)
    people.push_back({{"pose_keypoints_2d", compress(p.body)},
                      {"face_keypoints_2d", opt(p.face)},
                      {"hand_left_keypoints_2d", opt(p.left_hand)},
                      {"hand_right_keypoints_2d", opt(p.right_hand)}});
  J out = {{"people", people}, {"canvas_height", H}, {"canvas_width", W}};
  return out.dump(4);
}

Image run(const Image& rgb, int res, const Nets& nets, bool body, bool hand, bool face, std::string* json) {
  const Padded pd = resize_with_pad(to_mat(rgb), res);
  const Image padded = to_image(pd.img);
  const std::vector<Pose> poses = detect_poses(padded, nets, hand, face);
  if (json) *json = encode_poses_json(poses, padded.height, padded.width);
  const Image canvas = draw_poses(poses, padded.height, padded.width, body, hand, face);
  return crop(canvas, 0, 0, pd.w, pd.h);  // remove_pad
}

}  // namespace easel::pp::openpose
