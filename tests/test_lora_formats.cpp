// LoRA-family files: key mapping of every format onto the tiny SD1/SDXL models, ΔW of LoRA,
// LoCon (+Tucker), LoHa (+Tucker), LoKr (+Tucker), DoRA and full diffs against the references in
// tests/fixtures/lora/lora_deltas.safetensors (tools/fixtures/lora.py: diffusers/PEFT/lycoris),
// and clear errors on bad files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "common.h"
#include "io/safetensors.h"
#include "lora/lora.h"

using namespace easel;
using namespace easel::lora;
namespace fs = std::filesystem;

namespace {

// EASEL_LORA_FIXTURES overrides the folder (for regenerated files not yet in the tree).
std::string lora_fix(const std::string& name) {
  const char* o = std::getenv("EASEL_LORA_FIXTURES");
  return o ? std::string(o) + "/" + name : test::fixture("lora/" + name);
}

const Checkpoint& sd1() {
  static Checkpoint ck = open_checkpoint(test::fixture("sd1/diffusers"));
  return ck;
}
const Checkpoint& sdxl() {
  static Checkpoint ck = open_checkpoint(test::fixture("sdxl/diffusers"));
  return ck;
}

std::string our_name(const Module& m) {
  return (m.target == Target::UNet ? "unet:" : m.target == Target::TextEncoder ? "te:" : "te2:") + m.module;
}

const WeightStore& store(const Checkpoint& ck, Target t) {
  return t == Target::UNet ? ck.unet : t == Target::TextEncoder ? ck.text_encoder : ck.text_encoder_2;
}

Tensor add(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector(), y = b.to_vector();
  for (size_t i = 0; i < x.size(); i++) x[i] += y[i];
  return Tensor::from_vector(x, a.shape());
}

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("easel_lora_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    std::printf("[ error ] %s\n", e.what());  // the messages users see, in the test log
    return e.what();
  }
  return "";
}

// Every file tensor as f32 (for rewriting).
std::map<std::string, Tensor> tensors_of(const std::string& path) {
  std::map<std::string, Tensor> m;
  for (auto& [k, t] : load_weights(path).tensors) m[k] = t.to(DType::F32).clone();
  return m;
}

Tensor values(const Shape& s, float seed) {  // deterministic, non-zero, mixed signs
  std::vector<float> v((size_t)shape_numel(s));
  for (size_t i = 0; i < v.size(); i++) v[i] = std::sin(seed + 0.37f * (float)i) * 0.1f;
  return Tensor::from_vector(v, s);
}

// The reference files; sd1_peft_dora (PEFT DoRA, lora_magnitude_vector) once it is generated.
std::vector<std::string> files() {
  std::vector<std::string> f = {"sd1_kohya", "sd1_peft", "sd1_diffusers_old", "sd1_kohya_scale", "sd1_locon",
                                "sd1_loha",  "sd1_lokr", "sd1_dora",          "sd1_full"};
  if (fs::exists(lora_fix("sd1_peft_dora.safetensors"))) f.push_back("sd1_peft_dora");
  return f;
}

}  // namespace

// Every key of each file lands on the module the reference names, with the prefix it names.
TEST(LoraFormats, EveryKeyMapsOntoTheReferenceModules) {
  WeightStore ref = load_weights(lora_fix("lora_deltas.safetensors"));
  auto prefixes = nlohmann::json::parse(ref.metadata.at("files"));
  for (const std::string& name : files()) {
    SCOPED_TRACE(name);
    LoraFile f = read_lora(lora_fix(name + ".safetensors"), sd1());
    size_t consumed = 0;
    for (auto& m : f.modules) consumed += m.keys.size();
    EXPECT_EQ(consumed + f.unmatched.size(), f.n_keys);
    EXPECT_TRUE(f.unmatched.empty()) << f.unmatched.front();
    const auto& want = prefixes.at(name);
    ASSERT_EQ(f.modules.size(), want.size());
    for (auto& m : f.modules) {
      ASSERT_TRUE(want.contains(our_name(m))) << our_name(m);
      const std::string prefix = want.at(our_name(m)).get<std::string>();
      for (auto& k : m.keys) EXPECT_EQ(k.rfind(prefix, 0), 0u) << k << " vs " << prefix;
    }
  }
  EXPECT_EQ(read_lora(lora_fix("sd1_kohya.safetensors"), sd1()).format, "kohya");
  EXPECT_EQ(read_lora(lora_fix("sd1_peft.safetensors"), sd1()).format, "peft");
  EXPECT_EQ(read_lora(lora_fix("sd1_diffusers_old.safetensors"), sd1()).format, "diffusers_old");
  EXPECT_EQ(read_lora(lora_fix("sd1_loha.safetensors"), sd1()).format, "lycoris");
  EXPECT_EQ(read_lora(lora_fix("sd1_kohya.safetensors"), sd1()).metadata.at("ss_network_dim"), "4");
}

// ΔW at strength 1 and W' at 0.7 / -0.5 for every module of every file (fp32; the products are
// a few terms, so 1e-6 relative to the tensor's magnitude).
TEST(LoraFormats, DeltaWeightsMatchReference) {
  WeightStore ref = load_weights(lora_fix("lora_deltas.safetensors"));
  double worst_rel = 0;
  std::string worst_at;
  auto check = [&](const Tensor& got, const Tensor& want, const std::string& what) {
    const float scale = std::max(test::max_abs(want), 1e-6f);
    auto g = got.to_vector(), w = want.to_vector();
    double d = 0;
    for (size_t i = 0; i < g.size() && i < w.size(); i++) d = std::max(d, std::fabs((double)g[i] - w[i]));
    if (d / scale > worst_rel) worst_rel = d / scale, worst_at = what;
    EXPECT_TRUE(test::allclose(got, want, 2e-6f * scale, 1e-6f)) << what;
  };
  std::map<std::string, int> kinds;
  for (const std::string& file : files()) {
    LoraFile f = read_lora(lora_fix(file + ".safetensors"), sd1());
    for (auto& m : f.modules) {
      const std::string key = file + "/" + our_name(m);
      const Tensor& W = store(sd1(), m.target).get(m.module + ".weight");
      ASSERT_TRUE(ref.has("base/" + our_name(m))) << key;
      EXPECT_TRUE(test::allclose(W.to(DType::F32), ref.get("base/" + our_name(m)), 0, 0)) << key;
      kinds[kind_name(m.kind)]++;
      if (m.dora()) {
        kinds["dora"]++;
        check(add(W, delta_weight(m, W, 1)), ref.get(key + "/merged_1"), key + "/merged_1");
        for (const char* s : {"0.7", "-0.5"}) {
          const float st = std::stof(s);
          check(add(W, delta_weight(m, W, st)), ref.get(key + "/merged_" + s), key + "/merged_" + s);
          if (m.t.count("dora_scale"))  // LyCORIS files: also the ComfyUI-style lerp
            check(add(W, delta_weight(m, W, st, DoraStrength::Lerp)), ref.get(key + "/lerp_" + s), key + "/lerp_" + s);
        }
        continue;
      }
      if (m.t.count("mid")) kinds["tucker"]++;
      check(delta_weight(m, W, 1), ref.get(key + "/dW"), key + "/dW");
      for (const char* s : {"0.7", "-0.5"})
        if (ref.has(key + "/merged_" + s))
          check(add(W, delta_weight(m, W, std::stof(s))), ref.get(key + "/merged_" + s), key + "/merged_" + s);
      if (ref.has(key + "/db")) {
        check(delta_bias(m, 1), ref.get(key + "/db"), key + "/db");
        const Tensor& b = store(sd1(), m.target).get(m.module + ".bias");
        check(add(b, delta_bias(m, 0.7f)), ref.get(key + "/merged_b_0.7"), key + "/merged_b_0.7");
      }
    }
  }
  // Every kind was exercised.
  for (const char* k : {"lora", "loha", "lokr", "full", "dora", "tucker"}) EXPECT_GT(kinds[k], 0) << k;
  std::printf("[ LoRA ΔW ] worst |got - ref| / max|ref| = %.3g at %s\n", worst_rel, worst_at.c_str());
}

// Alphas and scales as the references define them.
TEST(LoraFormats, ScaleRules) {
  int seen = 0;
  for (auto& m : read_lora(lora_fix("sd1_kohya_scale.safetensors"), sd1()).modules) {
    if (m.module.find("attn1.to_q") != std::string::npos) {
      EXPECT_FLOAT_EQ(m.scale, 0.75f);  // "scale" beats alpha
      seen++;
    }
  }
  for (auto& m : read_lora(lora_fix("sd1_peft.safetensors"), sd1()).modules) {
    if (m.module == "encoder.layers.1.mlp.fc1") {
      EXPECT_FLOAT_EQ(m.alpha, 8);  // alpha_pattern
      EXPECT_FLOAT_EQ(m.scale, 2);  // 8 / r 4
      seen++;
    }
  }
  for (auto& m : read_lora(lora_fix("sd1_diffusers_old.safetensors"), sd1()).modules) {
    EXPECT_FLOAT_EQ(m.scale, 1);
    seen++;
  }
  for (auto& m : read_lora(lora_fix("sd1_lokr.safetensors"), sd1()).modules) {
    if (m.t.count("lokr_w1") && m.t.count("lokr_w2")) {
      EXPECT_FLOAT_EQ(m.scale, 1);  // both full: alpha ignored
      seen++;
    }
  }
  EXPECT_EQ(seen, 1 + 1 + 7 + 1);
}

// SDXL kohya files name UNet modules in LDM style; te1/te2 name the two encoders.
TEST(LoraFormats, SdxlLdmNamesMapToDiffusers) {
  const std::map<std::string, std::string> want = {
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"},
      {"lora_unet_input_blocks_8_1_transformer_blocks_1_ff_net_0_proj", "down_blocks.2.attentions.1.transformer_blocks.1.ff.net.0.proj"},
      {"lora_unet_input_blocks_4_1_proj_in", "down_blocks.1.attentions.0.proj_in"},
      {"lora_unet_input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"},
      {"lora_unet_input_blocks_1_0_emb_layers_1", "down_blocks.0.resnets.0.time_emb_proj"},
      {"lora_unet_input_blocks_4_0_skip_connection", "down_blocks.1.resnets.0.conv_shortcut"},
      {"lora_unet_input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"},
      {"lora_unet_input_blocks_0_0", "conv_in"},
      {"lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"},
      {"lora_unet_middle_block_2_out_layers_3", "mid_block.resnets.1.conv2"},
      {"lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_out_0", "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0"},
      {"lora_unet_output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"},
      {"lora_unet_output_blocks_8_0_skip_connection", "up_blocks.2.resnets.2.conv_shortcut"},
      {"lora_unet_time_embed_0", "time_embedding.linear_1"},
      {"lora_unet_label_emb_0_0", "add_embedding.linear_1"},
      {"lora_unet_out_2", "conv_out"},
      {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "encoder.layers.0.self_attn.q_proj"},
      {"lora_te2_text_model_encoder_layers_1_mlp_fc1", "encoder.layers.1.mlp.fc1"},
  };
  const Checkpoint& ck = sdxl();
  std::map<std::string, Tensor> t;
  float seed = 1;
  for (auto& [prefix, mod] : want) {
    Target tg = prefix.rfind("lora_te1_", 0) == 0 ? Target::TextEncoder
                : prefix.rfind("lora_te2_", 0) == 0 ? Target::TextEncoder2 : Target::UNet;
    const Shape& w = store(ck, tg).get(mod + ".weight").shape();
    Shape down = w, up = {w[0], 2};
    down[0] = 2;
    if (w.size() == 4) up = {w[0], 2, 1, 1};
    t[prefix + ".lora_down.weight"] = values(down, seed++);
    t[prefix + ".lora_up.weight"] = values(up, seed++);
    t[prefix + ".alpha"] = Tensor::from_vector({1.f}, {});
  }
  t["lora_unet_input_blocks_99_1_proj_in.lora_down.weight"] = values({2, 4}, 9);  // reported, not fatal
  t["lora_unet_input_blocks_99_1_proj_in.lora_up.weight"] = values({4, 2}, 10);
  const fs::path path = temp_dir() / "sdxl_kohya.safetensors";
  save_safetensors(path.string(), t);
  LoraFile f = read_lora(path.string(), ck);
  EXPECT_EQ(f.base_guess, "sdxl");
  ASSERT_EQ(f.modules.size(), want.size());
  for (auto& m : f.modules) {
    const std::string prefix = m.keys.front().substr(0, m.keys.front().find('.'));
    ASSERT_TRUE(want.count(prefix)) << prefix;
    EXPECT_EQ(m.module, want.at(prefix));
    EXPECT_EQ(m.target, prefix.rfind("lora_te1_", 0) == 0   ? Target::TextEncoder
                        : prefix.rfind("lora_te2_", 0) == 0 ? Target::TextEncoder2
                                                            : Target::UNet);
    EXPECT_FLOAT_EQ(m.scale, 0.5f);
    EXPECT_EQ(m.keys.size(), 3u);
  }
  ASSERT_EQ(f.unmatched.size(), 2u);
  EXPECT_NE(f.unmatched[0].find("input_blocks_99"), std::string::npos);
  // The same file on SD1: refused as a LoRA for SDXL.
  std::string e = error_of([&] { read_lora(path.string(), sd1()); });
  EXPECT_NE(e.find("sdxl"), std::string::npos) << e;
  EXPECT_NE(e.find(path.string()), std::string::npos) << e;
  fs::remove(path);
}

// The reference SDXL kohya file (LDM UNet names, te1 + te2): every key maps where the reference
// says, and ΔW matches.
TEST(LoraFormats, SdxlKohyaFileMatchesReference) {
  if (!fs::exists(lora_fix("sdxl_kohya.safetensors"))) GTEST_SKIP() << "sdxl_kohya fixture not generated";
  WeightStore ref = load_weights(lora_fix("lora_deltas.safetensors"));
  auto want = nlohmann::json::parse(ref.metadata.at("files")).at("sdxl_kohya");
  LoraFile f = read_lora(lora_fix("sdxl_kohya.safetensors"), sdxl());
  EXPECT_TRUE(f.unmatched.empty()) << f.unmatched.front();
  EXPECT_EQ(f.base_guess, "sdxl");
  ASSERT_EQ(f.modules.size(), want.size());
  std::set<Target> targets;
  double worst = 0;
  for (auto& m : f.modules) {
    const std::string n = our_name(m);
    ASSERT_TRUE(want.contains(n)) << n;
    for (auto& k : m.keys) EXPECT_EQ(k.rfind(want.at(n).get<std::string>(), 0), 0u) << k;
    const Tensor& W = store(sdxl(), m.target).get(m.module + ".weight");
    EXPECT_TRUE(test::allclose(W.to(DType::F32), ref.get("base_sdxl/" + n), 0, 0)) << n;
    const Tensor& dw = ref.get("sdxl_kohya/" + n + "/dW");
    auto r = test::allclose(delta_weight(m, W, 1), dw, 2e-6f * test::max_abs(dw), 1e-6f);
    EXPECT_TRUE(r) << n;
    worst = std::max(worst, (double)std::strtof(r.message() + std::strlen("max abs diff "), nullptr) / test::max_abs(dw));
    targets.insert(m.target);
  }
  EXPECT_EQ(targets.size(), 3u);  // unet, te1, te2
  std::printf("[ LoRA ΔW ] sdxl_kohya: worst |got - ref| / max|ref| = %.3g\n", worst);
}

// PEFT/diffusers names on SDXL (unet., text_encoder., text_encoder_2., raw "base_model.model."),
// old attention-processor names, alphas from "lora_adapter_metadata" (alpha_pattern, rsLoRA).
TEST(LoraFormats, PeftAndOldNamesOnSdxl) {
  const Checkpoint& ck = sdxl();
  const std::vector<std::tuple<std::string, std::string, Target>> want = {
      {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", Target::UNet},
      {"base_model.model.mid_block.attentions.0.proj_out", "mid_block.attentions.0.proj_out", Target::UNet},
      {"text_encoder.text_model.encoder.layers.0.self_attn.k_proj", "encoder.layers.0.self_attn.k_proj", Target::TextEncoder},
      {"text_encoder_2.encoder.layers.1.mlp.fc2", "encoder.layers.1.mlp.fc2", Target::TextEncoder2},
  };
  std::map<std::string, Tensor> t;
  float seed = 1;
  for (auto& [prefix, mod, tg] : want) {
    const Shape& w = store(ck, tg).get(mod + ".weight").shape();
    t[prefix + ".lora_A.weight"] = values({4, w[1]}, seed++);
    t[prefix + ".lora_B.weight"] = values({w[0], 4}, seed++);
  }
  // Old processor names: to_out_lora -> to_out.0, no alpha (scale 1).
  const std::string old = "up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_out_lora";
  const Shape& wo = ck.unet.get("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0.weight").shape();
  t["unet." + old + ".down.weight"] = values({2, wo[1]}, 20);
  t["unet." + old + ".up.weight"] = values({wo[0], 2}, 21);
  const std::map<std::string, std::string> md = {
      {"lora_adapter_metadata",
       R"({"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attentions.0.proj_out": 2},)"
       R"( "text_encoder.lora_alpha": 4, "text_encoder_2.lora_alpha": 16, "text_encoder_2.use_rslora": true})"}};
  const fs::path path = temp_dir() / "sdxl_peft.safetensors";
  save_safetensors(path.string(), t, md);
  LoraFile f = read_lora(path.string(), ck);
  EXPECT_TRUE(f.unmatched.empty()) << f.unmatched.front();
  ASSERT_EQ(f.modules.size(), 5u);
  std::map<std::string, const Module*> by;
  for (auto& m : f.modules) by[m.module] = &m;
  for (auto& [prefix, mod, tg] : want) {
    ASSERT_TRUE(by.count(mod)) << mod;
    EXPECT_EQ(by[mod]->target, tg) << mod;
  }
  EXPECT_FLOAT_EQ(by["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]->scale, 2.f);  // 8 / 4
  EXPECT_FLOAT_EQ(by["mid_block.attentions.0.proj_out"]->scale, 0.5f);                          // pattern 2 / 4
  EXPECT_FLOAT_EQ(by["encoder.layers.0.self_attn.k_proj"]->scale, 1.f);                          // 4 / 4
  EXPECT_FLOAT_EQ(by["encoder.layers.1.mlp.fc2"]->scale, 8.f);                                   // 16 / sqrt(4)
  ASSERT_TRUE(by.count("up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0"));
  EXPECT_FLOAT_EQ(by["up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0"]->scale, 1.f);
  EXPECT_NE(f.format.find("diffusers_old"), std::string::npos) << f.format;
  // ΔW = scale · B @ A, checked by hand on one element.
  const Module& q = *by["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"];
  Tensor dw = delta_weight(q, Tensor(), -0.5f);
  const Tensor &A = q.t.at("down"), &B = q.t.at("up");
  const int64_t o = 3, i = 5, in = A.size(1);
  double ref = 0;
  for (int64_t k = 0; k < 4; k++) ref += (double)B.f32()[o * 4 + k] * A.f32()[k * in + i];
  EXPECT_NEAR(dw.f32()[o * in + i], -0.5 * 2.0 * ref, 1e-6 * std::fabs(ref) + 1e-9);
  fs::remove(path);
}

TEST(LoraFormats, BadFilesGiveClearErrors) {
  const fs::path dir = temp_dir();
  const std::string src = lora_fix("sd1_kohya.safetensors");
  const std::string q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  // Truncated file.
  {
    std::ifstream in(src, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    const std::string p = (dir / "truncated.safetensors").string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), (std::streamsize)(bytes.size() / 2));
    std::string e = error_of([&] { read_lora(p, sd1()); });
    EXPECT_NE(e.find("truncated.safetensors"), std::string::npos) << e;
  }
  // NaN value.
  {
    auto t = tensors_of(src);
    t[q + ".lora_up.weight"].f32()[3] = NAN;
    const std::string p = (dir / "nan.safetensors").string();
    save_safetensors(p, t);
    std::string e = error_of([&] { read_lora(p, sd1()); });
    EXPECT_NE(e.find(q + ".lora_up.weight"), std::string::npos) << e;
    EXPECT_NE(e.find("NaN"), std::string::npos) << e;
  }
  // Factor shapes: against each other, and against the model.
  {
    auto t = tensors_of(src);
    t[q + ".lora_up.weight"] = values({32, 3}, 1);  // rank 3 vs down's 4
    const std::string p = (dir / "rank.safetensors").string();
    save_safetensors(p, t);
    std::string e = error_of([&] { read_lora(p, sd1()); });
    EXPECT_NE(e.find(q), std::string::npos) << e;
    EXPECT_NE(e.find("rank"), std::string::npos) << e;
    t = tensors_of(src);
    t[q + ".lora_down.weight"] = values({4, 40}, 2);  // in 40 vs the model's 32
    save_safetensors(p, t);
    e = error_of([&] { read_lora(p, sd1()); });
    EXPECT_NE(e.find(q), std::string::npos) << e;
    EXPECT_NE(e.find("does not fit"), std::string::npos) << e;
  }
  // A file whose keys name no module, and an SD1 LoRA on the SDXL model.
  {
    std::map<std::string, Tensor> t = {{"foo.bar", values({2, 2}, 1)}};
    const std::string p = (dir / "nothing.safetensors").string();
    save_safetensors(p, t);
    std::string e = error_of([&] { read_lora(p, sd1()); });
    EXPECT_NE(e.find("none of its 1 keys"), std::string::npos) << e;
    e = error_of([&] { read_lora(src, sdxl()); });
    EXPECT_NE(e.find("sd1_kohya.safetensors"), std::string::npos) << e;
    EXPECT_FALSE(e.empty());
  }
  // A te2 LoRA on SD1 (no name of a known base otherwise).
  {
    std::map<std::string, Tensor> t = {
        {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", values({2, 64}, 1)},
        {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", values({128, 2}, 2)}};
    const std::string p = (dir / "te2.safetensors").string();
    save_safetensors(p, t);
    std::string e = error_of([&] { read_lora(p, sd1()); });
    EXPECT_NE(e.find("sdxl"), std::string::npos) << e;
  }
  // Missing file.
  EXPECT_FALSE(error_of([&] { read_lora((dir / "absent.safetensors").string(), sd1()); }).empty());
  fs::remove_all(dir);
}

// loraref's bad inputs (copies of sd1_kohya with one defect each) and the wrong-base pairs.
TEST(LoraFormats, ReferenceBadFiles) {
  const std::string q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  std::string e = error_of([&] { read_lora(lora_fix("bad_truncated.safetensors"), sd1()); });
  EXPECT_NE(e.find("bad_truncated.safetensors"), std::string::npos) << e;
  e = error_of([&] { read_lora(lora_fix("bad_nan.safetensors"), sd1()); });
  EXPECT_NE(e.find(q + ".lora_up.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("NaN"), std::string::npos) << e;
  e = error_of([&] { read_lora(lora_fix("bad_shape.safetensors"), sd1()); });
  EXPECT_NE(e.find(q), std::string::npos) << e;
  EXPECT_NE(e.find("[32, 48]"), std::string::npos) << e;
  // Unknown layer: reported, the other 60 keys land.
  LoraFile f = read_lora(lora_fix("bad_unknown_layer.safetensors"), sd1());
  ASSERT_EQ(f.unmatched.size(), 3u);
  for (auto& u : f.unmatched) EXPECT_NE(u.find("lora_unet_down_blocks_7_"), std::string::npos) << u;
  size_t consumed = 0;
  for (auto& m : f.modules) consumed += m.keys.size();
  EXPECT_EQ(consumed, 60u);
  // Wrong base, both ways.
  e = error_of([&] { read_lora(lora_fix("sdxl_kohya.safetensors"), sd1()); });
  EXPECT_NE(e.find("sdxl"), std::string::npos) << e;
  e = error_of([&] { read_lora(lora_fix("sd1_kohya.safetensors"), sdxl()); });
  EXPECT_NE(e.find("another base"), std::string::npos) << e;
}

TEST(LoraFormats, DescribeLora) {
  std::string d = describe_lora(lora_fix("sd1_kohya.safetensors"));
  EXPECT_NE(d.find("modules: 20"), std::string::npos) << d;
  EXPECT_NE(d.find("ss_network_dim: 4"), std::string::npos) << d;
  EXPECT_NE(d.find("text_encoder (6)"), std::string::npos) << d;
  EXPECT_NE(d.find("unet (14)"), std::string::npos) << d;
  d = describe_lora(lora_fix("sd1_loha.safetensors"));
  EXPECT_NE(d.find("loha"), std::string::npos) << d;
}
