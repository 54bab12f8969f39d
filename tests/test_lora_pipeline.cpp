// LoRA merging end to end: the tiny SD1/SDXL pipelines with LoRAs merged against diffusers'
// load_lora_weights + set_adapters runs (tests/fixtures/lora/README.md), merge -> unmerge restoring
// every weight bit for bit, and failing LoRAs leaving the model unchanged.
#include <cmath>
#include <cstring>

#include "common.h"
#include "lora/lora_apply.h"
#include "lora/lora_bypass.h"
#include "pipeline/easel_c.h"
#include "pipeline/pipeline.h"

using namespace easel;

namespace {

struct L {
  const char* file;
  float unet, te;
};
struct Case {
  std::string name, model, ref;
  std::vector<L> loras;
  bool sdxl = false;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.ref; }  // readable ctest names

GenerateOptions options(bool sdxl) { return test::tiny_options(sdxl); }

std::vector<lora::LoraSpec> specs(const Pipeline& p, const std::vector<L>& ls) {
  std::vector<lora::LoraSpec> out;
  for (const L& l : ls) {
    lora::LoraSpec s;
    s.file = lora::read_lora(test::fixture(std::string("lora/") + l.file), p.checkpoint());
    s.unet_strength = l.unet;
    s.te_strength = l.te;
    out.push_back(std::move(s));
  }
  return out;
}

using Mode = Pipeline::LoraApply;
class LoraParity : public ::testing::TestWithParam<std::tuple<Case, Mode>> {};

TEST_P(LoraParity, MatchesDiffusers) {
  const Case& c = std::get<0>(GetParam());
  const Mode mode = std::get<1>(GetParam());
  WeightStore ref = test::load_ref("lora/" + c.ref + ".safetensors");
  auto pipe = Pipeline::load(test::fixture(c.model));
  pipe->set_loras(specs(*pipe, c.loras), mode);
  ASSERT_EQ(pipe->lora_mode(), mode);
  // diffusers runs the LoRAs as bypass layers (W x + s·B(A x)); the merge rounds W + s·ΔW once
  // more (~1e-7 relative), far below generate_and_compare's tolerances.
  GenerateResult r = test::generate_and_compare(*pipe, options(c.sdxl), "lora/" + c.ref + ".safetensors");
  EXPECT_TRUE(test::allclose(r.decoded, ref.get("image"), 1e-3f, 0));
  float worst = 0;
  {
    std::vector<float> a = r.latents.to_vector(), b = ref.get("final_latents").to_vector();
    for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, std::abs(a[i] - b[i]));
    std::printf("%s (%s): final latents max abs err %.3g\n", c.name.c_str(), mode == Mode::Merge ? "merge" : "bypass",
                worst);
  }
  // The LoRA must matter: the no-LoRA reference differs by orders of magnitude more.
  WeightStore plain = test::load_ref(std::string(c.sdxl ? "sdxl" : "sd1") + "/ref_pipe_euler.safetensors");
  EXPECT_FALSE(test::allclose(r.latents, plain.get("final_latents"), 1e-2f, 0));
}

const Case kCases[] = {
    {"kohya_0_8", "sd1/diffusers", "ref_pipe_kohya_0.8", {{"sd1_kohya.safetensors", 0.8f, 0.8f}}},
    {"peft_m0_5", "sd1/diffusers", "ref_pipe_peft_-0.5", {{"sd1_peft.safetensors", -0.5f, -0.5f}}},
    {"two", "sd1/diffusers", "ref_pipe_two", {{"sd1_kohya.safetensors", 0.8f, 0.8f}, {"sd1_peft.safetensors", -0.5f, -0.5f}}},
    {"two_split", "sd1/diffusers", "ref_pipe_two_split",
     {{"sd1_kohya.safetensors", 0.8f, 0.3f}, {"sd1_peft.safetensors", -0.5f, 1.0f}}},
    {"sdxl_kohya_0_8", "sdxl/diffusers", "ref_sdxl_pipe_kohya_0.8", {{"sdxl_kohya.safetensors", 0.8f, 0.8f}}, true},
};
INSTANTIATE_TEST_SUITE_P(Tiny, LoraParity, ::testing::Combine(::testing::ValuesIn(kCases),
                                                               ::testing::Values(Mode::Merge, Mode::Bypass)),
                         [](const ::testing::TestParamInfo<std::tuple<Case, Mode>>& i) {
                           return std::get<0>(i.param).name + (std::get<1>(i.param) == Mode::Merge ? "_merge" : "_bypass");
                         });

// Bytes of every tensor of the stores LoRAs touch.
std::map<std::string, std::vector<char>> snapshot(const Checkpoint& ck) {
  std::map<std::string, std::vector<char>> out;
  for (auto* st : {&ck.unet, &ck.text_encoder, &ck.text_encoder_2})
    for (auto& [k, t] : st->tensors) {
      const char* p = static_cast<const char*>(t.raw());
      out[st->source + "|" + k] = std::vector<char>(p, p + t.nbytes());
    }
  return out;
}

TEST(LoraMerge, UnmergeRestoresBitForBit) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  auto before = snapshot(pipe->checkpoint());
  GenerateResult r0 = pipe->generate(options(false));
  pipe->set_loras(specs(*pipe, {{"sd1_kohya.safetensors", 0.8f, 0.8f},
                                {"sd1_peft.safetensors", -0.5f, 1.f},
                                {"sd1_dora.safetensors", 0.7f, 0.7f},
                                {"sd1_full.safetensors", 1.f, 1.f}}));
  auto merged = snapshot(pipe->checkpoint());
  size_t changed = 0;
  for (auto& [k, v] : before) changed += merged.at(k) != v;
  EXPECT_GE(changed, 20u);  // 20 kohya/peft layers + the DoRA/full ones (biases too)
  pipe->set_loras({});
  auto after = snapshot(pipe->checkpoint());
  EXPECT_TRUE(before == after);
  GenerateResult r1 = pipe->generate(options(false));
  EXPECT_EQ(0, std::memcmp(r0.latents.raw(), r1.latents.raw(), r0.latents.nbytes()));
  EXPECT_TRUE(r0.image.pixels == r1.image.pixels);
}

TEST(LoraMerge, FailingLoraLeavesModelUnchanged) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  // With one LoRA merged, a failing set_loras must keep exactly that state.
  pipe->set_loras(specs(*pipe, {{"sd1_peft.safetensors", -0.5f, -0.5f}}));
  auto state = snapshot(pipe->checkpoint());
  GenerateResult r0 = pipe->generate(options(false));
  for (const char* bad : {"bad_truncated.safetensors", "bad_nan.safetensors", "bad_shape.safetensors"})
    EXPECT_ANY_THROW(lora::read_lora(test::fixture(std::string("lora/") + bad), pipe->checkpoint())) << bad;
  // A LoRA that passes reading but fails while merging (NaN in its LAST module, after earlier
  // modules have been computed): nothing may be swapped in.
  auto s = specs(*pipe, {{"sd1_kohya.safetensors", 0.8f, 0.8f}});
  lora::Module& m = s[0].file.modules.back();
  ASSERT_TRUE(m.t.count("up"));
  m.t["up"].f32()[0] = NAN;
  EXPECT_ERROR(pipe->set_loras(s), "non-finite");
  EXPECT_TRUE(snapshot(pipe->checkpoint()) == state);
  GenerateResult r1 = pipe->generate(options(false));
  EXPECT_EQ(0, std::memcmp(r0.latents.raw(), r1.latents.raw(), r0.latents.nbytes()));
  EXPECT_TRUE(r0.image.pixels == r1.image.pixels);
}

TEST(LoraMerge, UnknownLayerIsReported) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  auto s = specs(*pipe, {{"bad_unknown_layer.safetensors", 1.f, 1.f}});
  std::string line = lora::summary(s[0]);
  EXPECT_NE(line.find("applied 60 of 63 keys"), std::string::npos) << line;
  EXPECT_NE(line.find("down_blocks_7"), std::string::npos) << line;
  pipe->set_loras(s);
}

TEST(LoraMerge, HalfPrecisionModel) {
  // An f16 copy of the UNet store: W' = f32(W) + s·ΔW stays f32; unmerge gives the f16 tensors back.
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  Checkpoint ck = pipe->checkpoint();
  for (auto& [k, t] : ck.unet.tensors) t = t.to(DType::F16);
  auto before = snapshot(ck);
  auto s = specs(*pipe, {{"sd1_kohya.safetensors", 0.8f, 0.8f}});
  lora::Merger mg;
  mg.merge(ck, s);
  WeightStore deltas = test::load_ref("lora/lora_deltas.safetensors");
  const std::string name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  const Tensor& w = ck.unet.get(name + ".weight");
  EXPECT_EQ(w.dtype(), DType::F32);
  std::vector<float> got = w.to_vector(), base = pipe->checkpoint().unet.get(name + ".weight").to_vector();
  std::vector<float> dw = deltas.get("sd1_kohya/unet:" + name + "/dW").to_vector();
  for (size_t i = 0; i < got.size(); i++) {
    float b16 = Tensor::from_vector({base[i]}, {1}).to(DType::F16).to_vector()[0];
    float want = b16 + 0.8f * dw[i];
    EXPECT_NEAR(got[i], want, 1e-6f * std::abs(want) + 1e-7f) << i;  // f32 rounding of the sum
  }
  mg.unmerge(ck);
  EXPECT_TRUE(snapshot(ck) == before);
}

// Every file kind merged at 0.7 and -0.5 against the ΔW / W' references (lora_deltas): W' =
// base + s·dW for additive kinds, merged_<s> for LoCon/DoRA/PEFT DoRA, merged_b_<s> for biases.
TEST(LoraMerge, MergedWeightsMatchReferences) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  WeightStore ref = test::load_ref("lora/lora_deltas.safetensors");
  const char* files[] = {"sd1_kohya", "sd1_peft", "sd1_diffusers_old", "sd1_locon", "sd1_loha",
                         "sd1_lokr", "sd1_dora", "sd1_peft_dora", "sd1_full"};
  for (float s : {0.7f, -0.5f}) {
    char sb[16];
    std::snprintf(sb, sizeof sb, "%g", s);
    for (const char* f : files) {
      Checkpoint ck = pipe->checkpoint();
      lora::Merger mg;
      mg.merge(ck, specs(*pipe, {{(std::string(f) + ".safetensors").c_str(), s, s}}));
      int checked = 0, checked_b = 0;
      for (const auto& [key, t] : ref.tensors) {
        std::string pre = std::string(f) + "/";
        if (key.rfind(pre, 0) != 0 || key.size() < 3 || key.compare(key.size() - 3, 3, "/dW") != 0) continue;
        std::string name = key.substr(pre.size(), key.size() - pre.size() - 3);  // "unet:..." / "te:..."
        size_t c = name.find(':');
        const WeightStore& st = name.substr(0, c) == "unet" ? ck.unet : ck.text_encoder;
        std::string mod = name.substr(c + 1);
        Tensor want;
        if (ref.has(pre + name + "/merged_" + sb)) {
          want = ref.get(pre + name + "/merged_" + sb);
        } else {
          std::vector<float> b = ref.get("base/" + name).to_vector(), d = t.to_vector();
          for (size_t i = 0; i < b.size(); i++) b[i] += s * d[i];
          want = Tensor::from_vector(b, t.shape());
        }
        EXPECT_TRUE(test::allclose(st.get(mod + ".weight").to(DType::F32), want, 1e-6f, 1e-5f)) << f << " " << name << " " << s;
        if (ref.has(pre + name + "/merged_b_" + sb)) {
          EXPECT_TRUE(test::allclose(st.get(mod + ".bias").to(DType::F32), ref.get(pre + name + "/merged_b_" + sb), 1e-6f, 1e-5f))
              << f << " " << name << " bias";
          checked_b++;
        }
        checked++;
      }
      EXPECT_GE(checked, 2) << f;
      if (std::string(f) == "sd1_full") {
        EXPECT_EQ(checked_b, 2);
      }
      std::printf("%s at %s: %d weights, %d biases\n", f, sb, checked, checked_b);
    }
  }
}

TEST(LoraMerge, ShortHash) {
  // hashlib.sha256(data[8 + header_len:]).hexdigest()[:12], computed with Python.
  EXPECT_EQ(lora::lora_short_hash(test::fixture("lora/sd1_kohya.safetensors")), "15e81867ec29");
}

TEST(LoraMerge, ParseArg) {
  std::string p;
  float u, t;
  lora::parse_lora_arg("a/b.safetensors", p, u, t);
  EXPECT_EQ(p, "a/b.safetensors");
  EXPECT_EQ(u, 1.f);
  EXPECT_EQ(t, 1.f);
  lora::parse_lora_arg("x.safetensors:0.8", p, u, t);
  EXPECT_EQ(p, "x.safetensors");
  EXPECT_EQ(u, 0.8f);
  EXPECT_EQ(t, 0.8f);
  lora::parse_lora_arg("C:x.safetensors:-0.5:0.25", p, u, t);
  EXPECT_EQ(p, "C:x.safetensors");
  EXPECT_EQ(u, -0.5f);
  EXPECT_EQ(t, 0.25f);
  EXPECT_ERROR(lora::parse_lora_arg("x.safetensors:0.8x", p, u, t), "not a number");
}

}  // namespace

// Bypass mode for every file kind: the UNet's (and text encoder's) outputs equal those of the merged
// model (merge is checked against the references above), the weights stay untouched, and removing the
// LoRAs restores the plain outputs exactly.
TEST(LoraBypass, EveryKindMatchesMerge) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  const auto before = snapshot(pipe->checkpoint());
  GenerateOptions o = options(false);
  o.steps = 2;
  GenerateResult plain = pipe->generate(o);
  const char* files[] = {"sd1_kohya", "sd1_peft",  "sd1_diffusers_old", "sd1_locon", "sd1_loha",
                         "sd1_lokr",  "sd1_dora",  "sd1_peft_dora",     "sd1_full",  "sd1_kohya_scale"};
  for (const char* f : files) {
    auto s = specs(*pipe, {{(std::string(f) + ".safetensors").c_str(), 0.7f, -0.5f}});
    pipe->set_loras(s, Mode::Merge);
    GenerateResult merged = pipe->generate(o);
    pipe->set_loras(s, Mode::Bypass);
    EXPECT_TRUE(snapshot(pipe->checkpoint()) == before) << f << ": bypass must not touch the weights";
    GenerateResult bypass = pipe->generate(o);
    // Same math, different rounding order (W x + B(A x) vs (W + BA) x): fp32-level differences.
    EXPECT_TRUE(test::allclose(bypass.latents, merged.latents, 2e-4f, 1e-4f)) << f;
    EXPECT_FALSE(test::allclose(bypass.latents, plain.latents, 1e-3f, 0)) << f << ": the LoRA must matter";
    pipe->set_loras({}, Mode::Bypass);
    GenerateResult back = pipe->generate(o);
    EXPECT_EQ(0, std::memcmp(back.latents.raw(), plain.latents.raw(), plain.latents.nbytes())) << f;
  }
}

TEST(LoraBypass, FailingLoraKeepsPreviousBypass) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  pipe->set_loras(specs(*pipe, {{"sd1_peft.safetensors", -0.5f, -0.5f}}), Mode::Bypass);
  GenerateResult r0 = pipe->generate(options(false));
  auto s = specs(*pipe, {{"sd1_loha.safetensors", 0.8f, 0.8f}});  // dense path: merged_weights checks deltas
  lora::Module& m = s[0].file.modules.back();
  ASSERT_TRUE(m.t.count("hada_w1_a"));
  m.t["hada_w1_a"] = m.t["hada_w1_a"].clone();  // f32 factors may borrow the (read-only) file mapping
  m.t["hada_w1_a"].f32()[0] = NAN;
  EXPECT_ERROR(pipe->set_loras(s, Mode::Bypass), "non-finite");
  GenerateResult r1 = pipe->generate(options(false));
  EXPECT_EQ(0, std::memcmp(r0.latents.raw(), r1.latents.raw(), r0.latents.nbytes()));
  EXPECT_EQ(pipe->lora_mode(), Mode::Bypass);
}

TEST(LoraBypass, AutoMergesSmallAndSwitchesModes) {
  auto pipe = Pipeline::load(test::fixture("sd1/diffusers"));
  const auto before = snapshot(pipe->checkpoint());
  auto s = specs(*pipe, {{"sd1_kohya.safetensors", 0.8f, 0.8f}});
  pipe->set_loras(s);  // tiny model: the f32 copies are far below the threshold
  EXPECT_EQ(pipe->lora_mode(), Mode::Merge);
  EXPECT_FALSE(snapshot(pipe->checkpoint()) == before);
  pipe->set_loras(s, Mode::Bypass);  // switching unmerges
  EXPECT_TRUE(snapshot(pipe->checkpoint()) == before);
  pipe->set_loras({});
  EXPECT_EQ(pipe->lora_mode(), Mode::Auto);
}

TEST(LoraCApi, SetLorasMatchesDiffusers) {
  easel_pipeline* p = nullptr;
  ASSERT_EQ(easel_load(test::fixture("sd1/diffusers").c_str(), &p), 0) << easel_last_error();
  const std::string f = test::fixture("lora/sd1_kohya.safetensors");
  const char* files[] = {f.c_str()};
  const float unet[] = {0.8f};
  ASSERT_EQ(easel_set_loras(p, files, unet, nullptr, 1, 2), 0) << easel_last_error();
  easel_generate_params q;
  easel_default_params(&q);
  GenerateOptions o = options(false);
  q.prompt = o.prompt.c_str(), q.negative_prompt = o.negative_prompt.c_str();
  q.steps = o.steps, q.cfg_scale = o.cfg_scale, q.seed = o.seed, q.sampler = "euler", q.width = q.height = 64;
  Image img;
  img.width = img.height = 64, img.channels = 3;
  img.pixels.resize(64 * 64 * 3);
  ASSERT_EQ(easel_generate(p, &q, img.pixels.data()), 0) << easel_last_error();
  test::expect_image_close(img, test::load_ref("lora/ref_pipe_kohya_0.8.safetensors").get("image_u8"));
  // A bad file fails with its name and keeps the LoRA; bad arguments fail cleanly.
  const std::string bad = test::fixture("lora/bad_truncated.safetensors");
  const char* bad_files[] = {bad.c_str()};
  EXPECT_EQ(easel_set_loras(p, bad_files, unet, nullptr, 1, 0), 1);
  EXPECT_NE(std::string(easel_last_error()).find("bad_truncated.safetensors"), std::string::npos) << easel_last_error();
  EXPECT_EQ(easel_set_loras(p, files, unet, nullptr, 1, 7), 1);
  EXPECT_EQ(easel_set_loras(p, nullptr, nullptr, nullptr, 1, 0), 1);
  std::vector<uint8_t> again(64 * 64 * 3);
  ASSERT_EQ(easel_generate(p, &q, again.data()), 0);
  EXPECT_TRUE(again == img.pixels);
  EXPECT_EQ(easel_set_loras(p, nullptr, nullptr, nullptr, 0, 0), 0);  // removes them
  ASSERT_EQ(easel_generate(p, &q, again.data()), 0);
  EXPECT_FALSE(again == img.pixels);
  easel_free(p);
}
