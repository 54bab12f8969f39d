// OpenPose post-processing, ported line by line from controlnet_aux 0.0.10 open_pose/{body,hand,face,util}.py and
// __init__.py (detect_poses, detect_hands, detect_face); see openpose.h. numpy semantics kept for bit parity:
// float32 network maps resized per channel with cv2.resize (INTER_LANCZOS4 up / INTER_AREA down, as smart_resize),
// float64 heatmap averages, scipy.ndimage.gaussian_filter(sigma=3) (truncate 4, mode 'reflect', scipy's tap order),
// np.linspace, Python's round() (half to even), numpy's pairwise np.sum, float32 hand/face peak arithmetic.
#pragma GCC optimize("fp-contract=off")
#include <algorithm>
#include <cmath>
#include <cstring>

#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "ops/ops.h"
#include "preprocess/openpose.h"
#include "preprocess/openpose_cv.h"

namespace easel::pp::openpose {

namespace {

const char* kWhere = "openpose";

// scipy.ndimage.gaussian_filter(x, sigma=3) on float64: correlate1d along axis 0 then axis 1 with the 25-tap
// kernel of _gaussian_kernel1d(3, 0, 12) (exact doubles below), mode 'reflect' (d c b a | a b c d | d c b a),
// summed as scipy's symmetric path does: x[0] * w[0], then += (x[-j] + x[j]) * w[j] for j = 12 .. 1.
constexpr int kR = 12;
constexpr double kGauss3[kR + 1] = {
    0x1.105a329f98197p-3, 0x1.01a25f86eb137p-3, 0x1.b42a57d56c0bep-4, 0x1.4a614d1afd337p-4, 0x1.bfde9c12bec92p-5,
    0x1.0fa58939b528fp-5, 0x1.26defcaeb0202p-6, 0x1.1e6bccad344bap-7, 0x1.f1e9915139406p-9, 0x1.8345966f69518p-10,
    0x1.0d8a5ad43c165p-11, 0x1.4fbe39149e277p-13, 0x1.763a210dfb306p-15};

int reflect(int i, int n) {
  const int m = 2 * n;
  i %= m;
  if (i < 0) i += m;
  return i >= n ? m - 1 - i : i;
}

void correlate_line(const double* in, int n, ptrdiff_t stride, double* out, std::vector<double>& ext) {
  ext.resize(n + 2 * kR);
  for (int i = -kR; i < n + kR; i++) ext[i + kR] = in[(ptrdiff_t)reflect(i, n) * stride];
  for (int l = 0; l < n; l++) {
    const double* c = ext.data() + l + kR;
    double t = c[0] * kGauss3[0];
    for (int j = kR; j >= 1; j--) t += (c[-j] + c[j]) * kGauss3[j];
    out[(ptrdiff_t)l * stride] = t;
  }
}

// x: CV_64F [H, W] -> gaussian_filter(x, 3).
cv::Mat gaussian_filter3(const cv::Mat& x) {
  const int H = x.rows, W = x.cols;
  cv::Mat a(H, W, CV_64F), b(H, W, CV_64F);
  std::vector<double> ext;
  for (int c = 0; c < W; c++) correlate_line(x.ptr<double>(0) + c, H, W, a.ptr<double>(0) + c, ext);  // axis 0
  for (int r = 0; r < H; r++) correlate_line(a.ptr<double>(r), W, 1, b.ptr<double>(r), ext);           // axis 1
  return b;
}

// numpy's pairwise summation (np.sum of a contiguous float64 array).
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double r = 0.;
    for (size_t i = 0; i < n; i++) r += a[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; j++) r[j] = a[j];
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; j++) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// The network input: float32(img) / 256 - 0.5, NCHW in the image's channel order (BGR).  img: CV_8UC3
Tensor to_input(const cv::Mat& img) {
  const int H = img.rows, W = img.cols;
  Tensor x = Tensor::empty({1, 3, H, W});
  float* d = x.f32();
  for (int y = 0; y < H; y++) {
    const uint8_t* s = img.ptr<uint8_t>(y);
    for (int xx = 0; xx < W; xx++)
      for (int c = 0; c < 3; c++) d[((size_t)c * H + y) * W + xx] = (float)s[3 * xx + c] / 256.0f - 0.5f;
  }
  return x;
}

// util.padRightDownCorner(img, 8, 128): constant 128 below and right up to multiples of 8.
cv::Mat pad_right_down(const cv::Mat& img, int& pad_down, int& pad_right) {
  pad_down = img.rows % 8 == 0 ? 0 : 8 - img.rows % 8;
  pad_right = img.cols % 8 == 0 ? 0 : 8 - img.cols % 8;
  cv::Mat out;
  cv::copyMakeBorder(img, out, 0, pad_down, 0, pad_right, cv::BORDER_CONSTANT, cv::Scalar::all(128));
  return out;
}

void check_out(const Tensor& t, int64_t c, int64_t h, int64_t w, const char* what) {
  if (t.dim() != 4 || t.size(0) != 1 || t.size(1) != c || t.size(2) != h || t.size(3) != w)
    fail(kWhere, std::string("internal: ") + what + " output " + t.str() + ", expected [1, " + std::to_string(c) +
                     ", " + std::to_string(h) + ", " + std::to_string(w) + "]");
}

// Net output channel c [h, w] -> smart_resize_k(x8, LANCZOS4) -> crop [0:ch, 0:cw] -> smart_resize to (H, W).
cv::Mat upsample_map(const Tensor& out, int c, int ch, int cw, double H, double W) {
  const int h = (int)out.size(2), w = (int)out.size(3);
  cv::Mat m(h, w, CV_32F, const_cast<float*>(out.f32()) + (size_t)c * h * w);
  cv::Mat up = smart_resize(m, double(h) * 8, double(w) * 8);
  return smart_resize(up(cv::Rect(0, 0, cw, ch)).clone(), H, W);
}

// Peaks of one body heatmap (Body.__call__): gaussian_filter, >= the 4 neighbours (0 outside), > 0.1.
struct Peak {
  int x, y;
  double score;
  int id;
};

std::vector<Peak> body_peaks(const cv::Mat& map_ori, int& counter) {
  const cv::Mat one = gaussian_filter3(map_ori);
  const int H = one.rows, W = one.cols;
  std::vector<Peak> peaks;
  for (int y = 0; y < H; y++) {
    const double* r = one.ptr<double>(y);
    const double* up = y > 0 ? one.ptr<double>(y - 1) : nullptr;
    const double* dn = y + 1 < H ? one.ptr<double>(y + 1) : nullptr;
    for (int x = 0; x < W; x++) {
      const double v = r[x];
      if (!(v > 0.1)) continue;
      if (!(v >= (up ? up[x] : 0.0) && v >= (dn ? dn[x] : 0.0) && v >= (x > 0 ? r[x - 1] : 0.0) &&
            v >= (x + 1 < W ? r[x + 1] : 0.0)))
        continue;
      peaks.push_back({x, y, map_ori.at<double>(y, x), counter++});
    }
  }
  return peaks;
}

// limbSeq (1-based parts) and mapIdx (PAF channels + 19) of Body.__call__.
constexpr int kLimb[19][2] = {{2, 3},  {2, 6},   {3, 4},   {4, 5},   {6, 7},   {7, 8},   {2, 9},
                              {9, 10}, {10, 11}, {2, 12},  {12, 13}, {13, 14}, {2, 1},   {1, 15},
                              {15, 17}, {1, 16}, {16, 18}, {3, 17},  {6, 18}};
constexpr int kMapIdx[19][2] = {{31, 32}, {39, 40}, {33, 34}, {35, 36}, {41, 42}, {43, 44}, {19, 20},
                                {21, 22}, {23, 24}, {25, 26}, {27, 28}, {29, 30}, {47, 48}, {49, 50},
                                {53, 54}, {51, 52}, {55, 56}, {37, 38}, {45, 46}};

}  // namespace

cv::Mat smart_resize(const cv::Mat& x, double Ht, double Wt) {
  const double k = (Ht + Wt) / double(x.rows + x.cols);
  const int w = (int)Wt, h = (int)Ht;
  if (w <= 0 || h <= 0 || x.empty())
    fail(kWhere, "cannot resize a " + std::to_string(x.cols) + "x" + std::to_string(x.rows) + " map to " +
                     std::to_string(w) + "x" + std::to_string(h) + " (image too small or too elongated)");
  cv::Mat out;
  cv::resize(x, out, cv::Size(w, h), 0, 0, k < 1 ? cv::INTER_AREA : cv::INTER_LANCZOS4);
  return out;
}

cv::Mat to_mat(const Image& im) {
  EASEL_CHECK(im.channels == 3, kWhere, "internal: expected a 3-channel image");
  cv::Mat m(im.height, im.width, CV_8UC3);
  std::memcpy(m.data, im.pixels.data(), im.pixels.size());
  return m;
}

Image to_image(const cv::Mat& m) {
  EASEL_CHECK(m.type() == CV_8UC3, kWhere, "internal: expected an 8-bit 3-channel matrix");
  Image im;
  im.width = m.cols, im.height = m.rows, im.channels = 3;
  im.pixels.resize((size_t)m.rows * m.cols * 3);
  for (int y = 0; y < m.rows; y++) std::memcpy(im.row(y), m.ptr<uint8_t>(y), (size_t)m.cols * 3);
  return im;
}

BodyResult body_estimate(const Image& bgr, const Nets& nets) {
  const cv::Mat ori = to_mat(bgr);
  const int H = ori.rows, W = ori.cols;
  const double scale = 0.5 * 368 / H;  // scale_search [0.5], boxsize 368
  const cv::Mat img = smart_resize(ori, double(H) * scale, double(W) * scale);
  int pd, pr;
  const cv::Mat padded = pad_right_down(img, pd, pr);
  auto [paf_t, heat_t] = nets.body(to_input(padded));
  const int h8 = padded.rows / 8, w8 = padded.cols / 8;
  check_out(paf_t, 38, h8, w8, "body PAF");
  check_out(heat_t, 19, h8, w8, "body heatmap");
  // heatmap_avg / paf_avg: float64 [H, W] per channel (one scale: the float32 maps themselves).
  auto map64 = [&](const Tensor& t, int c) {
    cv::Mat m;
    upsample_map(t, c, img.rows, img.cols, H, W).convertTo(m, CV_64F);
    return m;
  };
  std::vector<std::vector<Peak>> all_peaks(18);
  int counter = 0;
  for (int part = 0; part < 18; part++) all_peaks[part] = body_peaks(map64(heat_t, part), counter);

  // Connections: for each limb, candidates scored by the PAF along 10 samples between the two parts.
  struct Conn {
    double a, b, s;
    int i, j;
  };
  std::vector<std::vector<Conn>> connection_all(19);
  std::vector<bool> special(19, false);
  const int mid_num = 10;
  for (int k = 0; k < 19; k++) {
    const auto& candA = all_peaks[kLimb[k][0] - 1];
    const auto& candB = all_peaks[kLimb[k][1] - 1];
    const int nA = (int)candA.size(), nB = (int)candB.size();
    if (nA == 0 || nB == 0) {
      special[k] = true;
      continue;
    }
    const cv::Mat sx = map64(paf_t, kMapIdx[k][0] - 19), sy = map64(paf_t, kMapIdx[k][1] - 19);
    struct Cand {
      int i, j;
      double s, total;
    };
    std::vector<Cand> cands;
    for (int i = 0; i < nA; i++) {
      for (int j = 0; j < nB; j++) {
        const long long dx = candB[j].x - candA[i].x, dy = candB[j].y - candA[i].y;
        double norm = std::sqrt((double)(dx * dx + dy * dy));
        norm = std::max(0.001, norm);
        const double vx = (double)dx / norm, vy = (double)dy / norm;
        // np.linspace(a, b, 10): i * step + a (step = (b - a) / 9; i / 9 * 0 + a when the step is 0), last = b.
        auto lin = [&](double a, double b, int I) {
          if (I == mid_num - 1) return b;
          const double delta = b - a, step = delta / (mid_num - 1);
          return step == 0 ? (double(I) / (mid_num - 1)) * delta + a : double(I) * step + a;
        };
        double pts[mid_num];
        int above = 0;
        for (int I = 0; I < mid_num; I++) {
          const int px = (int)std::nearbyint(lin(candA[i].x, candB[j].x, I));  // round(): half to even
          const int py = (int)std::nearbyint(lin(candA[i].y, candB[j].y, I));
          pts[I] = sx.at<double>(py, px) * vx + sy.at<double>(py, px) * vy;
          above += pts[I] > 0.05;
        }
        double sum = 0;  // Python's sum(): left to right
        for (double p : pts) sum += p;
        const double s = sum / mid_num + std::min(0.5 * H / norm - 1, 0.0);
        if (above > 0.8 * mid_num && s > 0)
          cands.push_back({i, j, s, s + candA[i].score + candB[j].score});
      }
    }
    std::stable_sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) { return a.s > b.s; });
    auto& conn = connection_all[k];
    for (const Cand& c : cands) {
      bool used = false;
      for (const Conn& e : conn) used |= e.i == c.i || e.j == c.j;
      if (used) continue;
      conn.push_back({(double)candA[c.i].id, (double)candB[c.j].id, c.s, c.i, c.j});
      if ((int)conn.size() >= std::min(nA, nB)) break;
    }
  }

  BodyResult res;
  for (auto& v : all_peaks)
    for (const Peak& p : v) res.candidate.push_back({(double)p.x, (double)p.y, p.score, (double)p.id});
  auto& subset = res.subset;  // rows: 18 candidate ids (-1), total score, part count
  for (int k = 0; k < 19; k++) {
    if (special[k]) continue;
    const int iA = kLimb[k][0] - 1, iB = kLimb[k][1] - 1;
    for (const Conn& c : connection_all[k]) {
      int found = 0, idx[2] = {-1, -1};
      for (int j = 0; j < (int)subset.size(); j++)
        if (subset[j][iA] == c.a || subset[j][iB] == c.b) {
          if (found < 2) idx[found] = j;  // the reference raises IndexError on a third match; ignored here
          found++;
        }
      if (found == 1) {
        auto& r = subset[idx[0]];
        if (r[iB] != c.b) {
          r[iB] = c.b;
          r[19] += 1;
          r[18] += res.candidate[(size_t)c.b][2] + c.s;
        }
      } else if (found == 2) {
        auto &r1 = subset[idx[0]], &r2 = subset[idx[1]];
        bool overlap = false;
        for (int p = 0; p < 18; p++) overlap |= r1[p] >= 0 && r2[p] >= 0;
        if (!overlap) {  // merge
          for (int p = 0; p < 18; p++) r1[p] += r2[p] + 1;
          r1[18] += r2[18];
          r1[19] += r2[19];
          r1[18] += c.s;
          subset.erase(subset.begin() + idx[1]);
        } else {
          r1[iB] = c.b;
          r1[19] += 1;
          r1[18] += res.candidate[(size_t)c.b][2] + c.s;
        }
      } else if (found == 0 && k < 17) {
        std::array<double, 20> row;
        row.fill(-1);
        row[iA] = c.a;
        row[iB] = c.b;
        row[19] = 2;
        row[18] = (0.0 + res.candidate[(size_t)c.a][2] + res.candidate[(size_t)c.b][2]) + c.s;
        subset.push_back(row);
      }
    }
  }
  std::vector<std::array<double, 20>> kept;
  for (auto& r : subset)
    if (!(r[19] < 4 || r[18] / r[19] < 0.4)) kept.push_back(r);
  subset = std::move(kept);
  return res;
}

std::vector<std::array<int, 2>> hand_estimate(const Image& bgr, const Nets& nets) {
  const cv::Mat raw = to_mat(bgr);
  const int Hr = raw.rows, Wr = raw.cols;
  cv::Mat ori;
  cv::GaussianBlur(raw, ori, cv::Size(0, 0), 0.8);
  const int wsize = 128;
  std::vector<cv::Mat> avg(22);
  for (auto& m : avg) m = cv::Mat::zeros(wsize, wsize, CV_64F);
  for (double ss : {0.5, 1.0, 1.5, 2.0}) {
    const double scale = ss * 368;
    const cv::Mat img = smart_resize(ori, scale, scale);
    int pd, pr;
    const cv::Mat padded = pad_right_down(img, pd, pr);
    const Tensor out = nets.hand(to_input(padded));
    check_out(out, 22, padded.rows / 8, padded.cols / 8, "hand");
    for (int c = 0; c < 22; c++) {
      const cv::Mat m = upsample_map(out, c, img.rows, img.cols, wsize, wsize);
      for (int y = 0; y < wsize; y++)
        for (int x = 0; x < wsize; x++) avg[c].at<double>(y, x) += (double)(m.at<float>(y, x) / 4.0f);
    }
  }
  std::vector<std::array<int, 2>> peaks;
  std::vector<int> label(wsize * wsize), stack;
  for (int part = 0; part < 21; part++) {
    cv::Mat& map_ori = avg[part];
    const cv::Mat one = gaussian_filter3(map_ori);
    // skimage.measure.label(one > 0.05, connectivity=2): components numbered in raster order of their first pixel.
    std::fill(label.begin(), label.end(), 0);
    int n = 0;
    std::vector<std::vector<double>> members;  // values of map_ori per component, raster order
    for (int y = 0; y < wsize; y++)
      for (int x = 0; x < wsize; x++) {
        if (!(one.at<double>(y, x) > 0.05) || label[y * wsize + x]) continue;
        label[y * wsize + x] = ++n;
        stack.assign(1, y * wsize + x);
        while (!stack.empty()) {
          const int p = stack.back();
          stack.pop_back();
          for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
              const int yy = p / wsize + dy, xx = p % wsize + dx;
              if (yy < 0 || yy >= wsize || xx < 0 || xx >= wsize || label[yy * wsize + xx]) continue;
              if (!(one.at<double>(yy, xx) > 0.05)) continue;
              label[yy * wsize + xx] = n;
              stack.push_back(yy * wsize + xx);
            }
        }
      }
    if (n == 0) {
      peaks.push_back({0, 0});
      continue;
    }
    members.assign(n, {});
    for (int i = 0; i < wsize * wsize; i++)
      if (label[i]) members[label[i] - 1].push_back(map_ori.at<double>(i / wsize, i % wsize));
    int best = 0;
    double best_sum = 0;
    for (int i = 0; i < n; i++) {  // np.argmax: the first maximum
      const double s = pairwise_sum(members[i].data(), members[i].size());
      if (i == 0 || s > best_sum) best = i, best_sum = s;
    }
    for (int i = 0; i < wsize * wsize; i++)
      if (label[i] != best + 1) map_ori.at<double>(i / wsize, i % wsize) = 0;
    // util.npmax: the first maximum in raster order.
    int by = 0, bx = 0;
    for (int y = 0; y < wsize; y++)
      for (int x = 0; x < wsize; x++)
        if (map_ori.at<double>(y, x) > map_ori.at<double>(by, bx)) by = y, bx = x;
    peaks.push_back({(int)(double(bx) * double(Wr) / double(wsize)), (int)(double(by) * double(Hr) / double(wsize))});
  }
  return peaks;
}

std::vector<std::array<int, 2>> face_estimate(const Image& bgr, const Nets& nets) {
  const cv::Mat face = to_mat(bgr);
  const int H = face.rows, W = face.cols;
  const cv::Mat img = smart_resize(face, 384, 384);
  const Tensor out = nets.face(to_input(img));
  check_out(out, 71, 48, 48, "face");
  // F.interpolate(hs[-1], (H, W), mode='bilinear', align_corners=True)
  const Tensor heat = ops::interpolate_bilinear(out, H, W, true);
  const float* d = heat.f32();
  std::vector<std::array<int, 2>> peaks;
  for (int c = 0; c < 71; c++) {
    const float* m = d + (size_t)c * H * W;
    int best = -1;
    for (int i = 0; i < H * W; i++)
      if (m[i] > 0.05f && (best < 0 || m[i] > m[best])) best = i;
    if (best >= 0) peaks.push_back({best % W, best / W});
  }
  return peaks;
}

}  // namespace easel::pp::openpose
