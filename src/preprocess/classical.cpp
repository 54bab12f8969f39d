// Classical ControlNet preprocessors, ports of the reference annotators (OpenCV, like them):
//   https://github.com/Mikubill/sd-webui-controlnet/blob/main/scripts/preprocessor/legacy/processor.py
//   https://github.com/Mikubill/sd-webui-controlnet/blob/main/annotator/shuffle/__init__.py
//   controlnet_aux/lineart_standard/__init__.py, controlnet_aux/util.py (HWC3)
// numpy semantics that matter for bit parity are noted inline (float32 arithmetic, truncating
// astype(uint8), uint8 wrap-around).
#include "preprocess/classical.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "sampling/rng.h"

namespace easel::pp {

namespace {

// Single-channel u8 -> 3 channels (HWC3 / cv2.COLOR_GRAY2RGB).
cv::Mat gray3(const cv::Mat& g) {
  cv::Mat out;
  cv::cvtColor(g, out, cv::COLOR_GRAY2RGB);
  return out;
}

// float32 -> uint8 as numpy's x.clip(0, 255).astype(np.uint8): clip, then truncate.
cv::Mat clip_trunc_u8(const cv::Mat& f) {
  cv::Mat out(f.size(), CV_8UC(f.channels()));
  const int n = f.cols * f.channels();
  for (int y = 0; y < f.rows; y++) {
    const float* s = f.ptr<float>(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int i = 0; i < n; i++) {
      float v = s[i];
      v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);  // NaN stays NaN -> 0 below
      d[i] = v >= 0.f ? (uint8_t)v : 0;
    }
  }
  return out;
}

// np.min(x, axis=2) of a 3-channel float32 image.
cv::Mat min_channel(const cv::Mat& f3) {
  cv::Mat out(f3.size(), CV_32F);
  for (int y = 0; y < f3.rows; y++) {
    const float* s = f3.ptr<float>(y);
    float* d = out.ptr<float>(y);
    for (int x = 0; x < f3.cols; x++) d[x] = std::min(std::min(s[3 * x], s[3 * x + 1]), s[3 * x + 2]);
  }
  return out;
}

// numpy's legacy RandomState(seed).uniform(0, 1): mt19937 init_genrand + 53-bit doubles.
struct NumpyUniform {
  TorchCpuRng mt;
  explicit NumpyUniform(uint64_t seed) : mt(seed & 0xffffffffu) {}
  double next() {
    uint32_t a = mt.random() >> 5, b = mt.random() >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }
};

// annotator/shuffle make_noise_disk(H, W, 1, F), float64 [H, W] in [0, 1].
cv::Mat make_noise_disk(int H, int W, int F, NumpyUniform& rng) {
  cv::Mat noise(H / F + 2, W / F + 2, CV_64F);
  for (int y = 0; y < noise.rows; y++)
    for (int x = 0; x < noise.cols; x++) noise.at<double>(y, x) = rng.next();
  cv::Mat big;
  cv::resize(noise, big, cv::Size(W + 2 * F, H + 2 * F), 0, 0, cv::INTER_CUBIC);
  cv::Mat n = big(cv::Rect(F, F, W, H)).clone();
  double lo, hi;
  cv::minMaxLoc(n, &lo, nullptr);
  n -= lo;  // noise -= np.min(noise)
  cv::minMaxLoc(n, nullptr, &hi);
  for (int y = 0; y < H; y++) {  // noise /= np.max(noise): a true division, as numpy
    double* r = n.ptr<double>(y);
    for (int x = 0; x < W; x++) r[x] /= hi;
  }
  return n;
}

}  // namespace

Padded resize_with_pad(const cv::Mat& rgb, int res) {
  const int H = rgb.rows, W = rgb.cols;
  const double k = double(res) / double(std::min(H, W));
  Padded p;
  p.h = (int)std::nearbyint(double(H) * k);  // np.round: half to even
  p.w = (int)std::nearbyint(double(W) * k);
  cv::Mat r;
  cv::resize(rgb, r, cv::Size(p.w, p.h), 0, 0, k > 1 ? cv::INTER_CUBIC : cv::INTER_AREA);
  auto pad64 = [](int x) { return (x + 63) / 64 * 64 - x; };
  cv::copyMakeBorder(r, p.img, 0, pad64(p.h), 0, pad64(p.w), cv::BORDER_REPLICATE);
  return p;
}

// cv2.Canny on the (3-channel) padded image; OpenCV takes the strongest channel gradient.
cv::Mat canny(const cv::Mat& rgb, int res, const Params& p) {
  Padded pd = resize_with_pad(rgb, res);
  cv::Mat edges;
  cv::Canny(pd.img, edges, p.at("low"), p.at("high"));
  return gray3(pd.crop(edges));
}

// blur_gaussian: resize, crop the padding, then GaussianBlur on uint8 (OpenCV's bit-exact path).
cv::Mat blur(const cv::Mat& rgb, int res, const Params& p) {
  Padded pd = resize_with_pad(rgb, res);
  cv::Mat img = pd.crop(pd.img), out;
  cv::GaussianBlur(img, out, cv::Size(0, 0), p.at("sigma"));
  return out;
}

// 255 - HWC3(img), at the input size (A1111 hides the resolution slider).
cv::Mat invert(const cv::Mat& rgb, int, const Params&) {
  cv::Mat out;
  cv::bitwise_not(rgb, out);
  return out;
}

namespace {
// One channel of an OpenCV colour conversion, then (v / 255) ** gamma * 255 in float32, truncated.
cv::Mat recolor(const cv::Mat& rgb, int code, int channel, float gamma) {
  cv::Mat conv, ch;
  cv::cvtColor(rgb, conv, code);
  cv::extractChannel(conv, ch, channel);
  cv::Mat f(ch.size(), CV_32F);
  for (int y = 0; y < ch.rows; y++)
    for (int x = 0; x < ch.cols; x++) {
      float v = ch.at<uint8_t>(y, x) / 255.0f;
      if (gamma != 1.0f) v = std::pow(v, gamma);
      f.at<float>(y, x) = v * 255.0f;
    }
  return gray3(clip_trunc_u8(f));
}
}  // namespace

// recolor_luminance: L of cv2.COLOR_BGR2LAB applied to the RGB array (A1111 passes RGB to a
// BGR conversion; kept for parity), with gamma.
cv::Mat recolor_luminance(const cv::Mat& rgb, int, const Params& p) {
  return recolor(rgb, cv::COLOR_BGR2Lab, 0, (float)p.at("gamma"));
}

// recolor_intensity: V of HSV (max of the channels), same gamma as above.
cv::Mat recolor_intensity(const cv::Mat& rgb, int, const Params& p) {
  return recolor(rgb, cv::COLOR_BGR2HSV, 2, (float)p.at("gamma"));
}

// easel's gray guide: cv2.cvtColor(RGB2GRAY) of the image resized to processor_res (no padding).
cv::Mat grayscale(const cv::Mat& rgb, int res, const Params&) {
  Padded pd = resize_with_pad(rgb, res);
  cv::Mat gray;
  cv::cvtColor(pd.crop(pd.img), gray, cv::COLOR_RGB2GRAY);
  return gray3(gray);
}

// easel's Sobel gradient magnitude of the gray resized image (no padding): CV_32F Sobel in x and
// y (reflect101 borders), cv2.magnitude; scale 0: cv2.normalize(NORM_MINMAX, 0, 255, CV_8U)
// (rounded), else uint8(clip(mag * scale)) (truncated).
cv::Mat gradient(const cv::Mat& rgb, int res, const Params& p) {
  Padded pd = resize_with_pad(rgb, res);
  cv::Mat gray, gx, gy, mag, out;
  cv::cvtColor(pd.crop(pd.img), gray, cv::COLOR_RGB2GRAY);
  const int k = (int)p.at("ksize");
  cv::Sobel(gray, gx, CV_32F, 1, 0, k);
  cv::Sobel(gray, gy, CV_32F, 0, 1, k);
  cv::magnitude(gx, gy, mag);
  const float scale = (float)p.at("scale");
  if (scale == 0.f) {
    cv::normalize(mag, out, 0, 255, cv::NORM_MINMAX, CV_8U);
  } else {
    mag *= scale;
    out = clip_trunc_u8(mag);
  }
  return gray3(out);
}

// tile_resample: unchanged below rate 1.1, else INTER_AREA down to int(H / rate) x int(W / rate).
cv::Mat tile_resample(const cv::Mat& rgb, int, const Params& p) {
  const double rate = p.at("rate");
  if (rate < 1.1) return rgb.clone();
  const int h = std::max(1, (int)(double(rgb.rows) / rate)), w = std::max(1, (int)(double(rgb.cols) / rate));
  cv::Mat out;
  cv::resize(rgb, out, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  return out;
}

// controlnet_aux util.resize_image: short side -> res, both sides rounded to multiples of 64,
// INTER_LANCZOS4 up, INTER_AREA down; no padding.
static cv::Mat resize_image_aux(const cv::Mat& rgb, int res) {
  const double k = double(res) / std::min(double(rgb.rows), double(rgb.cols));
  const int H = std::max(64, (int)std::nearbyint(double(rgb.rows) * k / 64.0) * 64);
  const int W = std::max(64, (int)std::nearbyint(double(rgb.cols) * k / 64.0) * 64);
  cv::Mat out;
  cv::resize(rgb, out, cv::Size(W, H), 0, 0, k > 1 ? cv::INTER_LANCZOS4 : cv::INTER_AREA);
  return out;
}

// controlnet_aux CannyDetector (detect_resolution = image_resolution = res).
cv::Mat canny_aux(const cv::Mat& rgb, int res, const Params& p) {
  cv::Mat img = resize_image_aux(rgb, res), edges;
  cv::Canny(img, edges, p.at("low"), p.at("high"));
  return gray3(edges);  // resized to resize_image(img, res): the same size, a copy
}

// threshold: white where every channel is above the threshold.
cv::Mat threshold(const cv::Mat& rgb, int res, const Params& p) {
  Padded pd = resize_with_pad(rgb, res);
  const double t = p.at("threshold");
  cv::Mat out(pd.img.size(), CV_8UC3);
  for (int y = 0; y < out.rows; y++) {
    const uint8_t* s = pd.img.ptr<uint8_t>(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int x = 0; x < out.cols; x++) {
      uint8_t v = std::min(std::min(s[3 * x], s[3 * x + 1]), s[3 * x + 2]) > t ? 255 : 0;
      d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = v;
    }
  }
  return pd.crop(out);
}

// scribble_xdog: difference of Gaussians (sigma 0.5 and 5) in float32, then
// result[2 * (255 - dog) > thr] = 255 where 2 * (255 - dog) wraps around in uint8 like numpy.
cv::Mat scribble_xdog(const cv::Mat& rgb, int res, const Params& p) {
  Padded pd = resize_with_pad(rgb, res);
  cv::Mat f, g1, g2;
  pd.img.convertTo(f, CV_32F);
  cv::GaussianBlur(f, g1, cv::Size(0, 0), 0.5);
  cv::GaussianBlur(f, g2, cv::Size(0, 0), 5.0);
  cv::Mat m = min_channel(g2 - g1);  // np.min(g2 - g1, axis=2)
  const double t = p.at("threshold");
  cv::Mat out(m.size(), CV_8U);
  for (int y = 0; y < m.rows; y++)
    for (int x = 0; x < m.cols; x++) {
      float v = 255.f - m.at<float>(y, x);
      v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
      uint8_t dog = v >= 0.f ? (uint8_t)v : 0;
      uint8_t w = (uint8_t)(2 * (uint8_t)(255 - dog));
      out.at<uint8_t>(y, x) = w > t ? 255 : 0;
    }
  return gray3(pd.crop(out));
}

// lineart_standard core on an 8-bit RGB image: (blur - x) min over channels, normalised by the
// median of the values above intensity_threshold (at least 16), times 127; 1 channel.
static cv::Mat lineart_core(const cv::Mat& img, const Params& p) {
  cv::Mat x, g;
  img.convertTo(x, CV_32F);
  cv::GaussianBlur(x, g, cv::Size(0, 0), p.at("sigma"));
  cv::Mat in = min_channel(g - x);
  const float thr = (float)p.at("intensity_threshold");
  std::vector<float> sel;
  for (int y = 0; y < in.rows; y++) {
    float* r = in.ptr<float>(y);
    for (int i = 0; i < in.cols; i++) {
      r[i] = std::min(std::max(r[i], 0.f), 255.f);  // .clip(0, 255)
      if (r[i] > thr) sel.push_back(r[i]);
    }
  }
  // np.median (float32): the middle value, or the float32 mean of the two middle values;
  // empty -> NaN, and max(16, NaN) is 16.
  float div = 16.f;
  if (!sel.empty()) {
    size_t n = sel.size(), h = n / 2;
    std::nth_element(sel.begin(), sel.begin() + h, sel.end());
    float med = sel[h];
    if (n % 2 == 0) {
      float lo = *std::max_element(sel.begin(), sel.begin() + h);
      med = (lo + med) / 2.0f;
    }
    div = std::max(16.f, med);
  }
  for (int y = 0; y < in.rows; y++) {
    float* r = in.ptr<float>(y);
    for (int i = 0; i < in.cols; i++) r[i] = r[i] / div * 127.f;
  }
  return clip_trunc_u8(in);
}

// A1111 lineart_standard: on the padded image (the median sees the padding), then cropped.
cv::Mat lineart_standard(const cv::Mat& rgb, int res, const Params& p) {
  Padded pd = resize_with_pad(rgb, res);
  return gray3(pd.crop(lineart_core(pd.img, p)));
}

// controlnet_aux LineartStandardDetector: resize_image (64-multiples), then INTER_CUBIC back to
// the input size.
cv::Mat lineart_standard_aux(const cv::Mat& rgb, int res, const Params& p) {
  cv::Mat m = gray3(lineart_core(resize_image_aux(rgb, res), p)), out;
  cv::resize(m, out, rgb.size(), 0, 0, cv::INTER_CUBIC);
  return out;
}

// shuffle: A1111 resizes (crops the padding), then ContentShuffleDetector with f = 256: two
// smooth noise fields (x first, then y) from np.random, used as a cv2.remap flow.
cv::Mat shuffle(const cv::Mat& rgb, int res, const Params& p, uint64_t seed) {
  Padded pd = resize_with_pad(rgb, res);
  cv::Mat img = pd.crop(pd.img);
  const int H = img.rows, W = img.cols, F = (int)p.at("f");
  NumpyUniform rng(seed);
  cv::Mat nx = make_noise_disk(H, W, F, rng), ny = make_noise_disk(H, W, F, rng);
  cv::Mat flow(H, W, CV_32FC2), out;  // np.concatenate([x * (W-1), y * (H-1)]).astype(float32)
  for (int y = 0; y < H; y++) {
    float* d = flow.ptr<float>(y);
    const double *a = nx.ptr<double>(y), *b = ny.ptr<double>(y);
    for (int x = 0; x < W; x++) {
      d[2 * x] = (float)(a[x] * double(W - 1));
      d[2 * x + 1] = (float)(b[x] * double(H - 1));
    }
  }
  cv::remap(img, out, flow, cv::noArray(), cv::INTER_LINEAR);
  return out;
}

// t2ia_color_grid: short side -> res (INTER_AREA), down to 1/64 (INTER_CUBIC), back up
// (INTER_NEAREST): a grid of 64x64 colour cells.
cv::Mat color(const cv::Mat& rgb, int res, const Params&) {
  const int h = rgb.rows, w = rgb.cols;
  int nh, nw;
  if (h < w) {
    nh = res;
    nw = (int)std::nearbyint(double(w) / double(h) * res);  // Python round(): half to even
  } else {
    nw = res;
    nh = (int)std::nearbyint(double(h) / double(w) * res);
  }
  cv::Mat img, small, out;
  cv::resize(rgb, img, cv::Size(nw, nh), 0, 0, cv::INTER_AREA);
  cv::resize(img, small, cv::Size(nw / 64, nh / 64), 0, 0, cv::INTER_CUBIC);
  cv::resize(small, out, cv::Size(nw, nh), 0, 0, cv::INTER_NEAREST);
  return out;
}

}  // namespace easel::pp
