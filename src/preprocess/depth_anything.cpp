// Depth Anything V2; see depth_anything.h for the references and the two layouts.
#include "preprocess/depth_anything.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace easel::pp {

namespace {

namespace fs = std::filesystem;

const char* kOrigProbe = "pretrained.blocks.0.attn.qkv.weight";
const char* kHfProbe = "backbone.encoder.layer.0.attention.attention.query.weight";

// transformers key -> original key (convert_depth_anything_to_hf.py, reversed). query/key/value are handled apart.
std::string hf_to_original(const std::string& k) {
  static const std::vector<std::pair<std::regex, std::string>> rules = [] {
    std::vector<std::pair<std::regex, std::string>> r;
    auto add = [&](const char* from, const char* to) { r.emplace_back(std::regex(from), to); };
    add(R"(^backbone\.embeddings\.cls_token$)", "pretrained.cls_token");
    add(R"(^backbone\.embeddings\.mask_token$)", "pretrained.mask_token");
    add(R"(^backbone\.embeddings\.position_embeddings$)", "pretrained.pos_embed");
    add(R"(^backbone\.embeddings\.patch_embeddings\.projection\.)", "pretrained.patch_embed.proj.");
    add(R"(^backbone\.layernorm\.)", "pretrained.norm.");
    add(R"(^backbone\.encoder\.layer\.(\d+)\.norm([12])\.)", "pretrained.blocks.$1.norm$2.");
    add(R"(^backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.)", "pretrained.blocks.$1.attn.proj.");
    add(R"(^backbone\.encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$)", "pretrained.blocks.$1.ls$2.gamma");
    add(R"(^backbone\.encoder\.layer\.(\d+)\.mlp\.)", "pretrained.blocks.$1.mlp.");
    add(R"(^neck\.reassemble_stage\.layers\.(\d)\.projection\.)", "depth_head.projects.$1.");
    add(R"(^neck\.reassemble_stage\.layers\.(\d)\.resize\.)", "depth_head.resize_layers.$1.");
    add(R"(^head\.conv1\.)", "depth_head.scratch.output_conv1.");
    add(R"(^head\.conv2\.)", "depth_head.scratch.output_conv2.0.");
    add(R"(^head\.conv3\.)", "depth_head.scratch.output_conv2.2.");
    return r;
  }();
  for (auto& [re, to] : rules)
    if (std::regex_search(k, re)) return std::regex_replace(k, re, to, std::regex_constants::format_first_only);
  std::smatch m;
  static const std::regex convs(R"(^neck\.convs\.(\d)\.(.*)$)");
  if (std::regex_match(k, m, convs))  // neck.convs.i -> scratch.layer{i+1}_rn
    return "depth_head.scratch.layer" + std::to_string(std::stoi(m[1]) + 1) + "_rn." + m[2].str();
  static const std::regex fusion(R"(^neck\.fusion_stage\.layers\.(\d)\.(.*)$)");
  if (std::regex_match(k, m, fusion)) {  // fusion layer i (coarse first) -> refinenet{4-i}
    std::string rest = m[2];
    rest = std::regex_replace(rest, std::regex(R"(^projection\.)"), "out_conv.");
    rest = std::regex_replace(rest, std::regex(R"(^residual_layer([12])\.convolution([12])\.)"), "resConfUnit$1.conv$2.");
    return "depth_head.scratch.refinenet" + std::to_string(4 - std::stoi(m[1])) + "." + rest;
  }
  return "";  // unknown: dropped
}

// Rows of a, b, c stacked (dim 0), f32.
Tensor cat0(const Tensor& a, const Tensor& b, const Tensor& c) {
  Shape s = a.shape();
  s[0] = a.size(0) + b.size(0) + c.size(0);
  Tensor out = Tensor::empty(s);
  float* d = out.f32();
  for (const Tensor* t : {&a, &b, &c}) {
    std::memcpy(d, t->f32(), t->numel() * sizeof(float));
    d += t->numel();
  }
  return out;
}

WeightStore rename_transformers(const WeightStore& w) {
  WeightStore out;
  out.source = w.source;
  for (auto& [k, t] : w.tensors) {
    static const std::regex qkv(R"(^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.query\.(weight|bias)$)");
    std::smatch m;
    if (std::regex_match(k, m, qkv)) {
      const std::string base = "backbone.encoder.layer." + m[1].str() + ".attention.attention.", s = m[2];
      out.tensors["pretrained.blocks." + m[1].str() + ".attn.qkv." + s] =
          cat0(w.get(base + "query." + s), w.get(base + "key." + s), w.get(base + "value." + s));
      continue;
    }
    const std::string n = hf_to_original(k);
    if (!n.empty()) out.tensors[n] = t;
  }
  return out;
}

int count_blocks(const WeightStore& w) {
  int n = 0;
  while (w.has("pretrained.blocks." + std::to_string(n) + ".attn.qkv.weight")) n++;
  return n;
}

// depth_anything_v2/util/transform.py Resize.constrain_to_multiple_of (multiple 14, min_val 518).
int constrain14(double x) {
  int y = (int)(std::nearbyint(x / 14.0) * 14.0);
  if (y < 518) y = (int)(std::ceil(x / 14.0) * 14.0);
  return y;
}

}  // namespace

// The channel swap, the float64 division and resize, then float32: as numpy / OpenCV do in the annotator.
Tensor depth_anything_input(const uint8_t* rgb, int h, int w) {
  cv::Mat f(h, w, CV_64FC3);
  for (int y = 0; y < h; y++) {
    const uint8_t* s = rgb + (size_t)y * w * 3;
    double* d = f.ptr<double>(y);
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++) d[3 * x + c] = double(s[3 * x + 2 - c]) / 255.0;
  }
  double sh = 518.0 / h, sw = 518.0 / w;
  if (sw > sh) sh = sw;
  else sw = sh;
  const int nh = constrain14(sh * h), nw = constrain14(sw * w);
  cv::Mat r;
  cv::resize(f, r, cv::Size(nw, nh), 0, 0, cv::INTER_CUBIC);
  const double mean[3] = {0.485, 0.456, 0.406}, stdv[3] = {0.229, 0.224, 0.225};
  Tensor x = Tensor::empty({1, 3, nh, nw});
  for (int y = 0; y < nh; y++) {
    const double* s = r.ptr<double>(y);
    for (int xx = 0; xx < nw; xx++)
      for (int c = 0; c < 3; c++) x.f32()[((int64_t)c * nh + y) * nw + xx] = float((s[3 * xx + c] - mean[c]) / stdv[c]);
  }
  return x;
}

bool is_depth_anything(const WeightStore& w) { return w.has(kOrigProbe) || w.has(kHfProbe); }

DepthAnythingV2 DepthAnythingV2::load(const std::string& path) {
  std::error_code ec;
  std::string file = path, config;
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "model.safetensors").string();
    if (!fs::is_regular_file(file, ec))
      fail("depth_anything", path + ": folder without model.safetensors (expected a transformers "
                                    "DepthAnythingForDepthEstimation folder or a weight file)");
  }
  WeightStore raw = dpt::to_f32(load_weights(file));
  DepthAnythingV2 m;
  m.source = file;
  if (raw.has("pretrained.model.patch_embed.backbone.stem.conv.weight"))
    fail("depth_anything", file + ": this is a MiDaS DPT-Hybrid checkpoint, not Depth Anything V2 (use depth_midas)");
  if (!is_depth_anything(raw))
    fail("depth_anything", file + ": not a Depth Anything V2 checkpoint (no '" + std::string(kOrigProbe) +
                               "' (original layout) or '" + kHfProbe + "' (transformers layout))");
  // The metric models (depth_anything_v2_metric_*.pth) have the same keys but a sigmoid head giving distances, not
  // the relative inverse depth the ControlNets were trained on: only their file name tells them apart.
  if (fs::path(file).filename().string().find("metric") != std::string::npos)
    fail("depth_anything", file + ": metric depth models are not supported (relative only)");
  const bool hf = raw.has(kHfProbe);
  m.layout = hf ? "transformers" : "original";
  m.offset_pos_interp = !hf;
  const WeightStore w = hf ? rename_transformers(raw) : std::move(raw);
  if (w.has("pretrained.blocks.0.mlp.w12.weight"))
    fail("depth_anything", file + ": the ViT-g variant (SwiGLU MLP) is not supported");

  const Tensor& pe = w.get("pretrained.patch_embed.proj.weight");
  if (pe.dim() != 4 || pe.size(1) != 3 || pe.size(2) != pe.size(3))
    fail("depth_anything", file + ": pretrained.patch_embed.proj.weight has shape " + shape_str(pe.shape()));
  m.C = pe.size(0);
  m.patch = (int)pe.size(2);
  m.heads = (int)std::max<int64_t>(1, m.C / 64);  // 64-dim heads in every DINOv2
  m.variant = m.C == 384 ? "vits" : m.C == 768 ? "vitb" : m.C == 1024 ? "vitl" : "custom";
  const int L = count_blocks(w);
  if (L < 4) fail("depth_anything", file + ": " + std::to_string(L) + " transformer blocks (at least 4 needed)");
  if (L == 12) m.taps = {2, 5, 8, 11};  // depth_anything_v2/dpt.py intermediate_layer_idx
  else if (L == 24) m.taps = {4, 11, 17, 23};
  else m.taps = {L / 4 - 1, L / 2 - 1, 3 * L / 4 - 1, L - 1};

  // transformers' config.json (beside model.safetensors) when present: heads, eps, tapped blocks, head type.
  const fs::path cfg_path = fs::path(file).parent_path() / "config.json";
  if (hf && fs::is_regular_file(cfg_path, ec)) {
    try {
      std::ifstream in(cfg_path);
      const nlohmann::json j = nlohmann::json::parse(in);
      if (j.value("depth_estimation_type", std::string("relative")) != "relative")
        fail("depth_anything", cfg_path.string() + ": metric depth models are not supported (relative only)");
      if (j.contains("backbone_config")) {
        const auto& b = j["backbone_config"];
        m.heads = b.value("num_attention_heads", m.heads);
        m.eps = b.value("layer_norm_eps", m.eps);
        if (b.contains("out_indices") && b["out_indices"].size() == 4) {
          for (int i = 0; i < 4; i++) m.taps[i] = b["out_indices"][i].get<int>() - 1;  // hidden_states[0] = embeddings
        } else if (b.contains("out_features") && b["out_features"].size() == 4) {  // "stage3" = block 2
          for (int i = 0; i < 4; i++) {
            const std::string f = b["out_features"][i].get<std::string>();
            if (f.rfind("stage", 0) != 0) fail("depth_anything", cfg_path.string() + ": out_features entry '" + f + "'");
            m.taps[i] = std::stoi(f.substr(5)) - 1;
          }
        }
      }
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // JSON syntax or types, a malformed "stageN"
      fail("depth_anything", cfg_path.string() + ": " + e.what());
    }
  }
  for (int t : m.taps)
    if (t < 0 || t >= L) fail("depth_anything", file + ": tapped block " + std::to_string(t) + " outside 0.." + std::to_string(L - 1));
  if (m.C % m.heads) fail("depth_anything", file + ": width " + std::to_string(m.C) + " not divisible by heads");

  const int64_t C = m.C;
  m.patch_embed.load(w, "pretrained.patch_embed.proj", 3, C, m.patch, m.patch, 0);
  m.cls_token = w.get("pretrained.cls_token", {1, 1, C});
  m.pos_embed = w.get("pretrained.pos_embed");
  const int64_t N = m.pos_embed.dim() == 3 ? m.pos_embed.size(1) - 1 : -1, M = (int64_t)std::llround(std::sqrt(double(std::max<int64_t>(N, 0))));
  if (N <= 0 || M * M != N || m.pos_embed.size(0) != 1 || m.pos_embed.size(2) != C)
    fail("depth_anything", file + ": pretrained.pos_embed has shape " + shape_str(m.pos_embed.shape()) +
                               " (expected [1, 1 + M*M, " + std::to_string(C) + "])");
  m.blocks.resize(L);
  for (int i = 0; i < L; i++) m.blocks[i].load(w, "pretrained.blocks." + std::to_string(i), C, m.eps, true);
  m.norm.load(w, "pretrained.norm", C, m.eps);

  std::array<int64_t, 4> ch;
  for (int i = 0; i < 4; i++) ch[i] = w.get("depth_head.projects." + std::to_string(i) + ".weight").size(0);
  const int factors[4] = {4, 2, 1, -2};
  for (int i = 0; i < 4; i++)
    m.reassemble[i].load(w, "depth_head.projects." + std::to_string(i), "depth_head.resize_layers." + std::to_string(i),
                         C, ch[i], factors[i]);
  const int64_t F = w.get("depth_head.scratch.layer1_rn.weight").size(0);
  m.neck.load(w, "depth_head.scratch", ch, F);
  m.head.load(w, "depth_head.scratch.output_conv1", "depth_head.scratch.output_conv2.0",
              "depth_head.scratch.output_conv2.2", F);
  if (w.has("depth_head.readout_projects.0.0.weight"))
    fail("depth_anything", file + ": use_clstoken heads are not supported");
  return m;
}

Tensor DepthAnythingV2::forward(const Tensor& x) const {
  if (x.dim() != 4 || x.size(0) != 1 || x.size(1) != 3)
    fail("depth_anything", "input must be [1, 3, H, W], got " + x.str());
  const int64_t H = x.size(2), W = x.size(3), ph = H / patch, pw = W / patch;
  if (ph < 1 || pw < 1) fail("depth_anything", "input " + x.str() + " is smaller than one patch");
  Tensor t = ops::nchw_to_nlc(patch_embed(x));  // [1, ph*pw, C]
  const int64_t n = ph * pw, N = pos_embed.size(1) - 1, M = (int64_t)std::llround(std::sqrt(double(N)));

  // Position embeddings for the ph x pw grid (DINOv2 interpolate_pos_encoding): bicubic, align_corners=False.
  Tensor pos = pos_embed;
  if (!(n == N && H == W)) {
    Tensor g = Tensor::empty({1, C, M, M});  // the patch positions as a grid
    for (int64_t i = 0; i < N; i++)
      for (int64_t c = 0; c < C; c++) g.f32()[c * N + i] = pos_embed.f32()[(1 + i) * C + c];
    Tensor r = offset_pos_interp
                   ? ops::interpolate_bicubic(g, ph, pw, false, (double(ph) + 0.1) / double(M), (double(pw) + 0.1) / double(M))
                   : ops::interpolate_bicubic(g, ph, pw, false);  // [1, C, ph, pw]
    pos = Tensor::empty({1, 1 + n, C});
    std::memcpy(pos.f32(), pos_embed.f32(), C * sizeof(float));
    for (int64_t i = 0; i < n; i++)
      for (int64_t c = 0; c < C; c++) pos.f32()[(1 + i) * C + c] = r.f32()[c * n + i];
  }
  Tensor h = Tensor::empty({1, 1 + n, C});  // [cls, patches] + pos
  for (int64_t c = 0; c < C; c++) h.f32()[c] = cls_token.f32()[c] + pos.f32()[c];
  for (int64_t i = 0; i < n * C; i++) h.f32()[C + i] = t.f32()[i] + pos.f32()[C + i];

  std::array<Tensor, 4> maps;
  int k = 0;
  for (int i = 0; i < (int)blocks.size() && k < 4; i++) {
    h = blocks[i].forward(h, heads);
    while (k < 4 && taps[k] == i) {
      maps[k] = reassemble[k].forward(dpt::tokens_to_map(norm(h), ph, pw));
      k++;
    }
  }
  return head.forward(neck.forward(maps), ph * patch, pw * patch);  // [1, ph*14, pw*14]
}

}  // namespace easel::pp
