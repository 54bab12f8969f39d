// CLIP text encoder vs transformers (tests/fixtures/sd{1,2}/ref_text.safetensors), and the prompt
// conditioner vs diffusers' encode and A1111's FrozenCLIPEmbedderWithCustomWords.
#include <cmath>
#include <filesystem>

#include "common.h"
#include "io/checkpoint.h"
#include "io/diffusers_folder.h"
#include "models/clip.h"
#include "models/conditioner.h"

using namespace easel;

namespace {

// fp32 on CPU: the reference and we sum in different orders; values are O(1) after layer norms.
constexpr float kAtol = 1e-5f, kRtol = 1e-5f;

CLIPTextModel load_sd1_folder() {
  std::string dir = test::fixture("sd1/diffusers/text_encoder");
  WeightStore w = load_weights(dir + "/model.safetensors");  // F16, keys without "text_model."
  CLIPTextModel m;
  m.load(w, parse_text_encoder_config(dir + "/config.json"));
  return m;
}

const CLIPTextModel& sd1() {
  static const CLIPTextModel m = load_sd1_folder();
  return m;
}

Tensor row(const Tensor& t, int64_t b) { return t.slice0(b, 1); }

void check_all(const CLIPTextModel& m, const WeightStore& ref) {
  const Tensor& ids = ref.get("input_ids");  // [3, 77]
  auto hs = m.hidden_states(ids);
  ASSERT_EQ(hs.size(), 4u);
  for (int i = 0; i < 4; i++)
    EXPECT_TRUE(test::allclose(hs[i], ref.get("hidden_states_" + std::to_string(i)), kAtol, kRtol)) << "layer " << i;
  Tensor last = m.forward(ids, 1);
  EXPECT_TRUE(test::allclose(last, ref.get("last_hidden_state"), kAtol, kRtol));
  EXPECT_TRUE(test::allclose(m.forward(ids, 2), ref.get("clip_skip_2"), kAtol, kRtol));
  EXPECT_TRUE(test::allclose(CLIPTextModel::pooled(last, ids), ref.get("pooler_output"), kAtol, kRtol));
}

}  // namespace

TEST(CLIP, SD1DiffusersFolderF16) {
  const CLIPTextModel& m = sd1();
  EXPECT_EQ(m.embeddings.token_embedding.dtype(), DType::F16);  // kept compact
  check_all(m, test::load_ref("sd1/ref_text.safetensors"));
}

TEST(CLIP, AcceptsTextModelPrefixAndChecksShapes) {
  std::string dir = test::fixture("sd1/diffusers/text_encoder");
  WeightStore w = load_weights(dir + "/model.safetensors"), nested;
  for (auto& [k, t] : w.tensors) nested.tensors["text_model." + k] = t;
  CLIPTextModel m;
  TextEncoderConfig cfg = parse_text_encoder_config(dir + "/config.json");
  m.load(nested, cfg);
  WeightStore ref = test::load_ref("sd1/ref_text.safetensors");
  EXPECT_TRUE(test::allclose(m.forward(ref.get("input_ids")), ref.get("last_hidden_state"), kAtol, kRtol));
  cfg.intermediate_size = 96;
  EXPECT_THROW(m.load(w, cfg), Error);
  EXPECT_THROW(m.forward(ref.get("input_ids"), 4), Error);  // only 3 layers
}

TEST(CLIP, SD1SingleFile) {
  Checkpoint ck = open_checkpoint(test::fixture("sd1/sd1_ldm.safetensors"));
  CLIPTextModel m;
  m.load(ck.text_encoder, ck.config.text);
  check_all(m, test::load_ref("sd1/ref_text.safetensors"));
}

TEST(CLIP, SD2OpenCLIPSingleFile) {
  // OpenCLIP weights (gelu, pad id 0); the fixture's 4th resblock is dropped by the loader as diffusers does.
  Checkpoint ck = open_checkpoint(test::fixture("sd2/sd2_ldm.safetensors"));
  EXPECT_EQ(ck.config.text.hidden_act, "gelu");
  CLIPTextModel m;
  m.load(ck.text_encoder, ck.config.text);
  WeightStore ref = test::load_ref("sd2/ref_text.safetensors");
  check_all(m, ref);
  // The SD2 conditioner pads with id 0 after EOS, as the reference input ids do.
  Tensor z = encode_diffusers(m, Tokenizer::clip(), "a photo of a cat", 1, ck.config.pad_token_id);
  EXPECT_EQ(ck.config.pad_token_id, 0);
  EXPECT_TRUE(test::allclose(z, row(ref.get("last_hidden_state"), 0), kAtol, kRtol));
}

TEST(Conditioner, DiffusersEncodeMatches) {
  WeightStore ref = test::load_ref("sd1/ref_text.safetensors");
  const Tokenizer& tok = Tokenizer::clip();
  // Reference ids are the pipeline's tokenisation.
  const Tensor& ids = ref.get("input_ids");
  for (int b = 0; b < 3; b++) {
    std::string p = b == 0 ? "a photo of a cat" : b == 1 ? "" : "a (red:1.2) cat, masterpiece";
    auto v = tok.encode_padded(p);
    EXPECT_EQ(std::vector<int64_t>(v.begin(), v.end()),
              std::vector<int64_t>(ids.data<int64_t>() + b * 77, ids.data<int64_t>() + (b + 1) * 77));
    EXPECT_TRUE(test::allclose(encode_diffusers(sd1(), tok, p), row(ref.get("last_hidden_state"), b), kAtol, kRtol));
    EXPECT_TRUE(test::allclose(encode_diffusers(sd1(), tok, p, 2), row(ref.get("clip_skip_2"), b), kAtol, kRtol));
  }
  // No emphasis, <= 75 tokens: the A1111 path gives exactly diffusers' result.
  for (const char* p : {"a photo of a cat", "", "masterpiece, best quality, 1girl, solo"}) {
    EXPECT_TRUE(test::allclose(encode_prompt(sd1(), tok, p, 1, 49407), encode_diffusers(sd1(), tok, p), 0, 0)) << p;
  }
}

// Expected values: A1111's tokenize_line + process_tokens (emphasis "Original") run in Python on this
// text encoder (transformers, fp32): shape, sum |z|, sum z and selected elements [token, channel].
TEST(Conditioner, A1111EmphasisChunksBreak) {
  const std::string p = [] {
    std::string s = "a (red:1.2) cat, [masterpiece], ";
    for (int i = 0; i < 80; i++) s += "photo ";
    return s + "BREAK (blue sky:0.8), ((hat))";
  }();
  struct Pt {
    int t, c;
    float v;
  };
  struct Case {
    int clip_skip, pad;
    double abs_sum, sum;
    std::vector<Pt> pts;
  };
  std::vector<Case> cases = {
      {1, 49407, 11598.239391475185, 1.2656898713576084,
       {{0, 0, 0.19948183f}, {2, 5, 2.04150224f}, {3, 17, 0.134976149f}, {40, 63, -0.263308525f},
        {76, 1, -0.539855659f}, {77, 0, 0.200337484f}, {80, 9, 1.11324489f}, {120, 33, -0.410060912f},
        {154, 2, 1.27758503f}, {156, 40, -0.119201407f}, {158, 7, -1.11209214f}, {230, 11, -0.292396933f}}},
      // clip skip 2 with SD2-style padding (id 0 after the first EOS of each chunk)
      {2, 0, 11088.244655153581, -13.200410525272673,
       {{0, 0, 0.280785739f}, {2, 5, 1.68914247f}, {3, 17, 0.284412861f}, {40, 63, -0.252220571f},
        {76, 1, -0.476267397f}, {77, 0, 0.279410064f}, {80, 9, 1.69799078f}, {120, 33, 1.72012269f},
        {154, 2, 1.19873428f}, {156, 40, 0.0811747685f}, {158, 7, -0.950422645f}, {230, 11, -0.00983039383f}}},
  };
  EXPECT_EQ(prompt_chunk_count(Tokenizer::clip(), p), 3);
  for (auto& c : cases) {
    Tensor z = encode_prompt(sd1(), Tokenizer::clip(), p, c.clip_skip, c.pad);
    ASSERT_EQ(z.shape(), (Shape{1, 231, 64}));
    double as = 0, s = 0;
    for (float v : z.to_vector()) as += std::fabs(v), s += v;
    EXPECT_NEAR(as, c.abs_sum, 1e-5 * c.abs_sum);
    EXPECT_NEAR(s, c.sum, 2e-3);  // a sum of 14784 terms of both signs: absolute error ~ 1e-7 * abs_sum
    // Looser than kRtol: emphasised chunks are rescaled by mean(z)/mean(z*w), two means of values
    // that largely cancel (|mean| << mean |z|), so torch's fp32 mean rounding is amplified ~10x.
    for (auto& pt : c.pts)
      EXPECT_NEAR(z.f32()[pt.t * 64 + pt.c], pt.v, 1e-5f + 1e-4f * std::fabs(pt.v)) << pt.t << "," << pt.c;
  }
}

TEST(Conditioner, PairPadsWithEmptyPrompt) {
  const Tokenizer& tok = Tokenizer::clip();
  std::string neg = "blurry, ";
  for (int i = 0; i < 90; i++) neg += "ugly ";
  Conditioning c = encode_prompt_pair(sd1(), tok, "a photo of a <lora:x:0.5>cat", neg);
  ASSERT_EQ(c.cond.shape(), (Shape{1, 154, 64}));
  ASSERT_EQ(c.uncond.shape(), (Shape{1, 154, 64}));
  Tensor first = encode_diffusers(sd1(), tok, "a photo of a cat"), empty = encode_diffusers(sd1(), tok, "");
  auto v = c.cond.to_vector();
  Tensor a = Tensor::from_vector(std::vector<float>(v.begin(), v.begin() + 77 * 64), {1, 77, 64});
  Tensor b = Tensor::from_vector(std::vector<float>(v.begin() + 77 * 64, v.end()), {1, 77, 64});
  // Not bitwise: the chunks run as one batch, so the GEMM blocking differs.
  EXPECT_TRUE(test::allclose(a, first, kAtol, kRtol));  // lora tag removed
  EXPECT_TRUE(test::allclose(b, empty, kAtol, kRtol));  // padding = the empty prompt's encoding
  EXPECT_TRUE(test::allclose(c.uncond, encode_prompt(sd1(), tok, neg, 1, 49407), 0, 0));
  EXPECT_EQ(encode_prompt(sd1(), tok, "cat", 1, 49407, 3).size(1), 231);
}

TEST(Conditioner, EmphasisModes) {
  Tensor z = Tensor::from_vector({1, 2, 3, 4, -1, 0.5f}, {1, 3, 2});
  Tensor orig = z.clone();
  apply_emphasis(z, {1.f, 2.f, 1.f}, Emphasis::NoNorm);
  EXPECT_EQ(z.to_vector(), (std::vector<float>{1, 2, 6, 8, -1, 0.5f}));
  z = orig.clone();
  apply_emphasis(z, {1.f, 2.f, 1.f}, Emphasis::Original);
  // mean before 9.5/6, after 16.5/6 -> scale 9.5/16.5
  float r = (9.5f / 6) / (16.5f / 6);
  auto v = z.to_vector();
  std::vector<float> want{1 * r, 2 * r, 6 * r, 8 * r, -1 * r, 0.5f * r};
  for (int i = 0; i < 6; i++) EXPECT_FLOAT_EQ(v[i], want[i]);
}
