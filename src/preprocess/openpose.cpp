// OpenPose preprocessors: registry entries (A1111 module names) and the network cache. See openpose.h.
// sd-webui-controlnet scripts/processor.py: openpose / openpose_hand / openpose_face / openpose_faceonly /
// openpose_full = OpenposeModel.run_model with include_body / include_hand / include_face.
#include "preprocess/openpose.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.h"
#include "preprocess/openpose_cv.h"
#include "preprocess/registry.h"

namespace easel::pp {

namespace {

const char* kBody = "body_pose_model.pth";
const char* kHand = "hand_pose_model.pth";
const char* kFace = "facenet.pth";

// Loaded networks by path (+ size and mtime, so a replaced file is reloaded). A few entries at most.
template <class Net>
std::shared_ptr<const Net> cached(const std::string& path, const std::function<void(Net&, const WeightStore&)>& ld) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Net>> cache;
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  const std::string key = path + "|" + std::to_string(size) + "|" + std::to_string(mtime);
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const WeightStore w = load_weights(path);
  auto net = std::make_shared<Net>();
  ld(*net, w);
  if (cache.size() >= 2) cache.clear();
  cache[key] = net;
  return net;
}

Fn make_fn(const PreprocessorInfo& info) {
  return [info](const cv::Mat& rgb, int res, const Params& p, const PreprocessRun& run) {
    const bool body = p.at("include_body") != 0, hand = p.at("include_hand") != 0, face = p.at("include_face") != 0;
    PreprocessorInfo all = info;  // the parameters may ask for files beyond the module's defaults
    all.weight_files = {kBody, kHand, kFace};
    auto need = [&](const char* f) {
      const bool listed = std::find(info.weight_files.begin(), info.weight_files.end(), f) != info.weight_files.end();
      return find_weights(listed ? info : all, f, run);
    };
    const std::string bp = need(kBody), hp = hand ? need(kHand) : "", fp = face ? need(kFace) : "";
    const openpose::Nets nets = openpose::load_nets(bp, hp, fp);
    std::string json;
    const Image out = openpose::run(openpose::to_image(rgb), res, nets, body, hand, face,
                                    run.json_out ? &json : nullptr);
    if (run.json_out) *run.json_out = std::move(json);
    return openpose::to_mat(out);
  };
}

}  // namespace

openpose::Nets openpose::load_nets(const std::string& body_path, const std::string& hand_path,
                                   const std::string& face_path) {
  Nets n;
  auto body = cached<BodyNet>(body_path, [](BodyNet& m, const WeightStore& w) { m.load(w); });
  n.body = [body](const Tensor& x) { return body->forward(x); };
  if (!hand_path.empty()) {
    auto hand = cached<CpmNet>(hand_path, [](CpmNet& m, const WeightStore& w) { m.load(w, 22); });
    n.hand = [hand](const Tensor& x) { return hand->forward(x); };
  }
  if (!face_path.empty()) {
    auto face = cached<CpmNet>(face_path, [](CpmNet& m, const WeightStore& w) { m.load(w, 71); });
    n.face = [face](const Tensor& x) { return face->forward(x); };
  }
  return n;
}

void add_openpose(std::vector<Entry>& v) {
  struct Def {
    const char* name;
    bool body, hand, face;
    const char* desc;
  };
  const Def defs[] = {
      {"openpose", true, false, false, "OpenPose body: the 18-keypoint COCO skeleton"},
      {"openpose_hand", true, true, false, "OpenPose body + hands (21 keypoints each)"},
      {"openpose_face", true, false, true, "OpenPose body + face landmarks"},
      {"openpose_faceonly", false, false, true, "OpenPose face landmarks only (the body net finds the faces)"},
      {"openpose_full", true, true, true, "OpenPose body + hands + face"},
  };
  for (const Def& d : defs) {
    PreprocessorInfo info;
    info.name = d.name;
    info.a1111_names = {d.name};
    info.description = std::string(d.desc) +
                       " (controlnet_aux / sd-webui-controlnet annotator; --json writes the OpenPose keypoints)";
    info.params = {{"include_body", d.body ? 1.0 : 0.0, 0, 1, "draw the body skeleton (0/1)"},
                   {"include_hand", d.hand ? 1.0 : 0.0, 0, 1, "detect and draw hands (0/1; needs " +
                                                               std::string(kHand) + ")"},
                   {"include_face", d.face ? 1.0 : 0.0, 0, 1, "detect and draw the face (0/1; needs " +
                                                               std::string(kFace) + ")"}};
    info.weight_files = {kBody};
    if (d.hand) info.weight_files.push_back(kHand);
    if (d.face) info.weight_files.push_back(kFace);
    info.weights_origin = "lllyasviel/Annotators";
    v.push_back({info, make_fn(info)});
  }
}

}  // namespace easel::pp
