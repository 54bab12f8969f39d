// OpenPose networks on easel's ops (controlnet_aux open_pose/model.py bodypose_model / handpose_model,
// open_pose/face.py FaceNet; the CMU OpenPose CPM architecture, https://arxiv.org/abs/1611.08050).
// Checkpoint keys are the layer names ("conv1_1.weight", "Mconv7_stage6_L2.bias"): the original .pth files
// store them without the nn.Sequential level that util.transfer adds. Widths come from the weight shapes;
// only the outputs are fixed (38 PAFs + 19 heatmaps, 22 hand / 71 face heatmaps), checked with messages that
// name the file and, for a swapped file, what it looks like.
#include <string>

#include "core/error.h"
#include "ops/ops.h"
#include "preprocess/openpose.h"

namespace easel::pp::openpose {

namespace {

const char* kWhere = "openpose";

// Layer `name` with kernel k; in/out checked when >= 0. Returns the conv and sets `out` to its width.
Conv load_conv(const WeightStore& w, const std::string& name, int k, int64_t in, int64_t out, bool relu) {
  const std::string key = name + ".weight";
  if (!w.has(key)) fail(kWhere, w.source + ": missing tensor '" + key + "'");
  const Tensor& wt = w.get(key);
  const Shape& s = wt.shape();
  if (s.size() != 4 || s[2] != k || s[3] != k || (in >= 0 && s[1] != in) || (out >= 0 && s[0] != out)) {
    std::string want = "[" + (out >= 0 ? std::to_string(out) : std::string("O")) + ", " +
                       (in >= 0 ? std::to_string(in) : std::string("I")) + ", " + std::to_string(k) + ", " +
                       std::to_string(k) + "]";
    fail(kWhere, w.source + ": tensor '" + key + "' has shape " + wt.str() + ", expected " + want);
  }
  Conv c;
  c.weight = wt;
  c.bias = w.get(name + ".bias", {s[0]});
  c.pad = k / 2;
  c.relu = relu;
  return c;
}

int64_t out_of(const std::vector<Conv>& v) { return v.back().weight.size(0); }

// A chain of convs; the width of each input is the previous output (`in` for the first).
struct ChainSpec {
  std::string name;
  int k;
  bool relu;
};

std::vector<Conv> load_chain(const WeightStore& w, const std::vector<ChainSpec>& spec, int64_t in,
                             const std::string& suffix, int64_t last_out) {
  std::vector<Conv> v;
  for (size_t i = 0; i < spec.size(); i++) {
    const bool last = i + 1 == spec.size();
    v.push_back(load_conv(w, spec[i].name + suffix, spec[i].k, in, last ? last_out : -1, spec[i].relu));
    in = out_of(v);
  }
  return v;
}

Tensor run_chain(const std::vector<Conv>& v, Tensor x, bool pools = false) {
  for (size_t i = 0; i < v.size(); i++) {
    x = ops::conv2d(x, v[i].weight, v[i].bias, 1, v[i].pad);
    if (v[i].relu) ops::relu_(x);
    // VGG front: max pools after conv1_2, conv2_2, conv3_4 (layers 1, 3, 7).
    if (pools && (i == 1 || i == 3 || i == 7)) x = ops::max_pool2d(x, 2, 2);
  }
  return x;
}

const std::vector<ChainSpec> kVgg = {{"conv1_1", 3, true}, {"conv1_2", 3, true}, {"conv2_1", 3, true},
                                     {"conv2_2", 3, true}, {"conv3_1", 3, true}, {"conv3_2", 3, true},
                                     {"conv3_3", 3, true}, {"conv3_4", 3, true}, {"conv4_1", 3, true},
                                     {"conv4_2", 3, true}};

// Mconv1..7 of stage n (the branch suffix _L1/_L2 is added by load_chain): 7x7 x5, 1x1 x2, no ReLU on the last.
std::vector<ChainSpec> mstage(int n) {
  std::vector<ChainSpec> v;
  for (int i = 1; i <= 7; i++)
    v.push_back({"Mconv" + std::to_string(i) + "_stage" + std::to_string(n), i <= 5 ? 7 : 1, i < 7});
  return v;
}

}  // namespace

void BodyNet::load(const WeightStore& w) {
  if (!w.has("conv5_1_CPM_L1.weight") || !w.has("conv4_4_CPM.weight")) {
    std::string hint = w.has("conv6_2_CPM.weight") ? " (it has conv6_2_CPM with " +
                                                         std::to_string(w.get("conv6_2_CPM.weight").size(0)) +
                                                         " outputs: a hand or face model, hand_pose_model.pth or "
                                                         "facenet.pth)"
                                                   : "";
    fail(kWhere, w.source + ": not an OpenPose body model (body_pose_model.pth): no conv4_4_CPM / conv5_1_CPM_L1" +
                     hint);
  }
  std::vector<ChainSpec> front = kVgg;
  front.push_back({"conv4_3_CPM", 3, true});
  front.push_back({"conv4_4_CPM", 3, true});
  model0 = load_chain(w, front, 3, "", -1);
  const int64_t feat = out_of(model0);
  const std::vector<ChainSpec> s1 = {{"conv5_1_CPM", 3, true}, {"conv5_2_CPM", 3, true}, {"conv5_3_CPM", 3, true},
                                     {"conv5_4_CPM", 1, true}, {"conv5_5_CPM", 1, false}};
  l1[0] = load_chain(w, s1, feat, "_L1", 38);
  l2[0] = load_chain(w, s1, feat, "_L2", 19);
  for (int n = 2; n <= 6; n++) {
    auto spec = mstage(n);
    l1[n - 1] = load_chain(w, spec, 38 + 19 + feat, "_L1", 38);
    l2[n - 1] = load_chain(w, spec, 38 + 19 + feat, "_L2", 19);
  }
  // The reference lists Mconv7_stage6_L1 twice in no_relu_layers and never Mconv7_stage6_L2, so the heatmap
  // output goes through a ReLU.
  l2[5].back().relu = true;
}

std::pair<Tensor, Tensor> BodyNet::forward(const Tensor& x) const {
  const Tensor out1 = run_chain(model0, x, true);  // [1, F, H/8, W/8]
  Tensor a = run_chain(l1[0], out1), b = run_chain(l2[0], out1);
  for (int n = 1; n < 6; n++) {
    const Tensor cat = ops::concat({a, b, out1}, 1);  // [1, 38 + 19 + F, H/8, W/8]
    a = run_chain(l1[n], cat);
    b = run_chain(l2[n], cat);
  }
  return {a, b};
}

void CpmNet::load(const WeightStore& w, int expect_out) {
  const char* role = expect_out == 22 ? "hand model (hand_pose_model.pth)" : "face model (facenet.pth)";
  if (!w.has("conv6_2_CPM.weight") || !w.has("conv5_3_CPM.weight")) {
    const bool body = w.has("conv5_1_CPM_L1.weight");
    fail(kWhere, w.source + ": not an OpenPose " + role + ": no conv5_3_CPM / conv6_2_CPM" +
                     (body ? " (it has conv5_1_CPM_L1: a body model, body_pose_model.pth)" : ""));
  }
  const int64_t got = w.get("conv6_2_CPM.weight").size(0);
  if (got != expect_out)
    fail(kWhere, w.source + ": not an OpenPose " + role + ": conv6_2_CPM has " + std::to_string(got) +
                     " outputs, expected " + std::to_string(expect_out) +
                     (got == 22 ? " (22: a hand model, hand_pose_model.pth)"
                                : got == 71 ? " (71: a face model, facenet.pth)" : ""));
  n_out = expect_out;
  std::vector<ChainSpec> f = kVgg;
  for (ChainSpec s : {ChainSpec{"conv4_3", 3, true}, {"conv4_4", 3, true}, {"conv5_1", 3, true},
                      {"conv5_2", 3, true}, {"conv5_3_CPM", 3, true}})
    f.push_back(s);
  front = load_chain(w, f, 3, "", -1);
  const int64_t feat = out_of(front);
  stages[0] = load_chain(w, {{"conv6_1_CPM", 1, true}, {"conv6_2_CPM", 1, false}}, feat, "", n_out);
  for (int n = 2; n <= 6; n++) stages[n - 1] = load_chain(w, mstage(n), n_out + feat, "", n_out);
}

Tensor CpmNet::forward(const Tensor& x) const {
  const Tensor feat = run_chain(front, x, true);  // [1, F, H/8, W/8]
  Tensor h = run_chain(stages[0], feat);
  for (int n = 1; n < 6; n++) h = run_chain(stages[n], ops::concat({h, feat}, 1));
  return h;
}

}  // namespace easel::pp::openpose
