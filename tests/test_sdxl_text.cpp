// SDXL text conditioning (models/conditioner_sdxl.h) against transformers and diffusers
// (tools/fixtures/sdxl.py: tests/fixtures/sdxl/ref_text.safetensors): both text encoders' hidden
// states and projected pooled output, diffusers' StableDiffusionXLPipeline.encode_prompt (base and
// refiner, through the diffusers folders and the sgm single files), the force-zeros negative; and the
// A1111 path (chunks, emphasis per encoder), time ids.
// The fixture encoders zero the embedding rows of tokens not in the dumped prompts (compressible
// files); prompts with other tokens still run on non-zero inputs (position embeddings, BOS/EOS).
#include <algorithm>
#include <cmath>

#include "common.h"
#include "io/checkpoint.h"
#include "io/diffusers_folder.h"
#include "models/conditioner_sdxl.h"

using namespace easel;

namespace {

std::string sdxl(const std::string& rel) { return test::fixture("sdxl/" + rel); }

// fp32 on CPU, values O(1): only the summation order differs.
constexpr float kAtol = 1e-5f, kRtol = 1e-5f;

CLIPTextModel load_te(const std::string& sub) {
  std::string dir = sdxl(sub);
  WeightStore w = load_weights(dir + "/model.safetensors");  // f16
  CLIPTextModel m;
  m.load(w, parse_text_encoder_config(dir + "/config.json"));
  return m;
}

struct Models {
  CLIPTextModel te1 = load_te("diffusers/text_encoder");
  CLIPTextModel te2 = load_te("diffusers/text_encoder_2");
  Tokenizer tok1 = Tokenizer::from_folder(sdxl("diffusers/tokenizer"));
  Tokenizer tok2 = Tokenizer::from_folder(sdxl("diffusers/tokenizer_2"));  // pads with "!" (0)
  const Tokenizer& tok = tok1;
  SDXLTextEncoders base() const { return {&te1, &tok1, &te2, &tok2, 49407, 0}; }
  SDXLTextEncoders refiner() const { return {nullptr, nullptr, &te2, &tok2, 49407, 0}; }
};

const Models& models() {
  static const Models m;
  return m;
}

const WeightStore& ref() {
  static const WeightStore w = load_weights(sdxl("ref_text.safetensors"));
  return w;
}

const std::vector<std::string> kPrompts = {"a photo of a cat", "", "a (red:1.2) cat, masterpiece"};  // the dump's

// > 75 tokens: two chunks in the A1111 path (truncated to 77 by diffusers).
std::string long_prompt() {
  std::string s;
  for (int i = 0; i < 6; i++)
    s += std::string(i ? " " : "") + "a beautiful landscape with mountains, rivers, trees and a small house";
  return s;
}

Tensor row(const Tensor& t, int64_t b) { return t.slice0(b, 1); }
// Row b of a [3, ...] dump as [1, ...].
Tensor ref_row(const std::string& key, int b) { return row(ref().get(key), b); }

// Rows [t0, t0 + n) of a [1, L, C] tensor, channels [c0, c0 + nc).
Tensor window(const Tensor& z, int64_t t0, int64_t n, int64_t c0, int64_t nc) {
  const int64_t C = z.size(2);
  Tensor out = Tensor::empty({1, n, nc});
  for (int64_t t = 0; t < n; t++)
    for (int64_t c = 0; c < nc; c++) out.f32()[t * nc + c] = z.f32()[(t0 + t) * C + c0 + c];
  return out;
}

// c vs the dump's <tag>.<which>prompt_embeds / <tag>.<which>pooled_prompt_embeds row b.
void expect_cond(const SDXLConditioning& c, const std::string& tag, const std::string& which, int b) {
  auto r = test::allclose(c.context, ref_row(tag + "." + which + "prompt_embeds", b), kAtol, kRtol);
  EXPECT_TRUE(r) << tag << " " << which << b;
  auto rp = test::allclose(c.pooled, ref_row(tag + "." + which + "pooled_prompt_embeds", b), kAtol, kRtol);
  EXPECT_TRUE(rp) << tag << " " << which << b;
  std::printf("%s %s%d: context %s; pooled %s\n", tag.c_str(), which.c_str(), b, r.message(), rp.message());
}

}  // namespace

TEST(SDXLText, TokenizersMatchTheDump) {
  const Models& m = models();
  EXPECT_EQ(m.tok1.pad_id(), 49407);
  EXPECT_EQ(m.tok2.pad_id(), 0);
  for (int b = 0; b < 3; b++)
    for (auto [tok, key] : {std::pair{&m.tok1, "input_ids"}, {&m.tok2, "input_ids_2"}}) {
      auto v = tok->encode_padded(kPrompts[b], 77, tok->pad_id());
      const int64_t* r = ref().get(key).data<int64_t>() + b * 77;
      EXPECT_EQ(std::vector<int64_t>(v.begin(), v.end()), std::vector<int64_t>(r, r + 77)) << key << " " << b;
    }
}

TEST(SDXLText, EncodersMatchTransformers) {
  const Models& m = models();
  for (auto [tag, te, key] : {std::tuple{"te1", &m.te1, "input_ids"}, {"te2", &m.te2, "input_ids_2"}}) {
    SCOPED_TRACE(tag);
    const Tensor& ids = ref().get(key);  // [3, 77]
    auto hs = te->hidden_states(ids);
    const int n = (int)te->layers.size();
    ASSERT_EQ((int)hs.size(), n + 1);
    for (int i = 0; i <= n; i++)
      EXPECT_TRUE(test::allclose(hs[i], ref().get(std::string(tag) + ".hidden_states_" + std::to_string(i)), kAtol,
                                 kRtol))
          << i;
    // hidden_layer: hidden_states[-(skip+1)], raw, from the same pass.
    EXPECT_TRUE(test::allclose(te->hidden_layer(ids, 1), hs[n - 1], 0, 0));
    EXPECT_TRUE(test::allclose(te->hidden_layer(ids, 2), hs[n - 2], 0, 0));
  }
  // Pooled: text_projection(final_layer_norm(last)[first EOS]) = CLIPTextModelWithProjection.text_embeds.
  // transformers takes the first eos_token_id (49407 here), or argmax(ids) for the legacy eos_token_id 2 of
  // the real SDXL text_encoder_2: the same index for these ids. Ids padded with EOS (tokenizer 1) instead of
  // "!" give the same rows (causal attention: positions up to the first EOS never see the padding).
  const Tensor& ids2 = ref().get("input_ids_2");
  for (int b = 0; b < 3; b++) {
    const int64_t* r = ids2.data<int64_t>() + b * 77;
    EXPECT_EQ(std::find(r, r + 77, 49407) - r, std::max_element(r, r + 77) - r);
  }
  for (const char* key : {"input_ids_2", "input_ids"}) {
    Tensor proj;
    m.te2.hidden_layer(ref().get(key), 1, &proj);
    auto r = test::allclose(proj, ref().get("te2.text_embeds"), kAtol, kRtol);
    EXPECT_TRUE(r) << key;
    std::printf("te2 text_embeds from %s: %s\n", key, r.message());
  }
  Tensor last = m.te2.final_layer_norm(m.te2.hidden_states(ids2).back());
  EXPECT_TRUE(test::allclose(CLIPTextModel::pooled(last, ids2), ref().get("te2.pooled_unprojected"), kAtol, kRtol));
  Tensor unused;
  EXPECT_THROW(m.te1.hidden_layer(ids2, 1, &unused), Error);  // CLIP-L has no text_projection
  EXPECT_THROW(m.te2.hidden_layer(ids2, 0), Error);
}

TEST(SDXLText, DiffusersEncodePromptMatches) {
  const Models& m = models();
  for (int b = 0; b < 3; b++) {
    SCOPED_TRACE(kPrompts[b]);
    SDXLConditioning c = encode_diffusers_sdxl(m.base(), kPrompts[b]);
    ASSERT_EQ(c.context.shape(), (Shape{1, 77, 128}));
    ASSERT_EQ(c.pooled.shape(), (Shape{1, 32}));
    expect_cond(c, "base", "", b);
    c = encode_diffusers_sdxl(m.refiner(), kPrompts[b]);
    ASSERT_EQ(c.context.shape(), (Shape{1, 77, 64}));
    expect_cond(c, "refiner", "", b);
    // diffusers clip_skip=1: hidden_states[-3] of both encoders; the pooled output is unchanged.
    c = encode_diffusers_sdxl(m.base(), kPrompts[b], 1);
    Tensor want = ops::concat({ref_row("te1.hidden_states_1", b), ref_row("te2.hidden_states_1", b)}, 2);
    EXPECT_TRUE(test::allclose(c.context, want, kAtol, kRtol));
    EXPECT_TRUE(test::allclose(c.pooled, ref_row("te2.text_embeds", b), kAtol, kRtol));
  }
  // Negatives "" and "blurry"; the refiner's default negative (None, no force-zeros there) is "".
  expect_cond(encode_diffusers_sdxl(m.base(), ""), "base_neg_empty", "negative_", 0);
  expect_cond(encode_diffusers_sdxl(m.base(), "blurry"), "base_neg_blurry", "negative_", 0);
  expect_cond(encode_diffusers_sdxl(m.refiner(), ""), "refiner", "negative_", 0);
  SDXLTextEncoders no2 = m.base();
  no2.te2 = nullptr;
  EXPECT_THROW(encode_diffusers_sdxl(no2, "x"), Error);
}

// The sgm single files (CLIP-L + OpenCLIP bigG, text_projection used as x @ P) through open_checkpoint.
TEST(SDXLText, SingleFilesMatchDiffusers) {
  const Models& m = models();
  for (bool refiner : {false, true}) {
    Checkpoint ck = open_checkpoint(sdxl(refiner ? "sdxl_refiner_ldm.safetensors" : "sdxl_ldm.safetensors"));
    CLIPTextModel te1, te2;
    SDXLTextEncoders enc = refiner ? m.refiner() : m.base();
    if (!refiner) {
      te1.load(ck.text_encoder, ck.config.text);
      enc.te1 = &te1;
    }
    te2.load(ck.text_encoder_2, ck.config.text_2);
    enc.te2 = &te2;
    enc.pad_id_1 = ck.config.pad_token_id;
    enc.pad_id_2 = ck.config.pad_token_id_2;
    for (int b = 0; b < 3; b++)
      expect_cond(encode_diffusers_sdxl(enc, kPrompts[b]), refiner ? "refiner" : "base", "", b);
  }
}

TEST(SDXLText, ForceZerosForEmptyNegative) {
  const Models& m = models();
  PromptOptions opt;
  SDXLConditioningPair p = encode_prompt_pair_sdxl(m.base(), kPrompts[0], "", opt, true);
  EXPECT_TRUE(test::allclose(p.uncond.context, ref_row("base.negative_prompt_embeds", 0), 0, 0));
  EXPECT_TRUE(test::allclose(p.uncond.pooled, ref_row("base.negative_pooled_prompt_embeds", 0), 0, 0));
  expect_cond(p.cond, "base", "", 0);
  // Without the flag (the refiner) an empty negative is the encoded empty prompt.
  p = encode_prompt_pair_sdxl(m.base(), kPrompts[0], "", opt, false);
  expect_cond(p.uncond, "base_neg_empty", "negative_", 0);
  p = encode_prompt_pair_sdxl(m.refiner(), kPrompts[0], "", opt, false);
  expect_cond(p.uncond, "refiner", "negative_", 0);
  // A non-empty negative is encoded whatever the flag.
  p = encode_prompt_pair_sdxl(m.base(), kPrompts[0], "blurry", opt, true);
  expect_cond(p.uncond, "base_neg_blurry", "negative_", 0);
  // A long prompt: the zeros cover all its chunks.
  p = encode_prompt_pair_sdxl(m.base(), long_prompt(), "", opt, true);
  EXPECT_EQ(p.cond.context.shape(), (Shape{1, 154, 128}));
  EXPECT_EQ(p.uncond.context.shape(), (Shape{1, 154, 128}));
  EXPECT_EQ(test::max_abs(p.uncond.context), 0.f);
  EXPECT_EQ(test::max_abs(p.uncond.pooled), 0.f);
}

// No syntax, <= 75 tokens: A1111's path is diffusers' encode.
TEST(SDXLText, A1111MatchesDiffusersForPlainPrompts) {
  const Models& m = models();
  PromptOptions opt;
  for (const char* p : {"a photo of a cat", "", "masterpiece, best quality, 1girl, solo"}) {
    for (bool refiner : {false, true}) {
      SDXLTextEncoders enc = refiner ? m.refiner() : m.base();
      SDXLConditioning a = encode_prompt_sdxl(enc, p, opt), d = encode_diffusers_sdxl(enc, p);
      EXPECT_TRUE(test::allclose(a.context, d.context, 0, 0)) << p;
      EXPECT_TRUE(test::allclose(a.pooled, d.pooled, 0, 0)) << p;
    }
  }
  // clip_skip N (A1111) = diffusers clip_skip N-1.
  opt.clip_skip = 2;
  SDXLConditioning a = encode_prompt_sdxl(m.base(), kPrompts[0], opt);
  SDXLConditioning d = encode_diffusers_sdxl(m.base(), kPrompts[0], 1);
  EXPECT_TRUE(test::allclose(a.context, d.context, 0, 0));
  EXPECT_TRUE(test::allclose(a.pooled, d.pooled, 0, 0));
  // <lora:> tags are removed.
  opt.clip_skip = 1;
  expect_cond(encode_prompt_sdxl(m.base(), "a photo of a <lora:x:0.7>cat", opt), "base", "", 0);
}

// > 75 tokens: two 77-token chunks, each encoded on its own; pooled from chunk 1.
TEST(SDXLText, LongPromptChunks) {
  const Models& m = models();
  PromptOptions opt;
  SDXLConditioning c = encode_prompt_sdxl(m.base(), long_prompt(), opt);
  ASSERT_EQ(c.context.shape(), (Shape{1, 154, 128}));
  ASSERT_EQ(c.pooled.shape(), (Shape{1, 32}));
  auto chunks = prompt_chunks(m.tok, long_prompt(), opt);
  ASSERT_EQ(chunks.size(), 2u);
  Tensor ids2 = chunk_ids(chunks, m.tok, 0);  // [2, 77], "!" after the first EOS
  for (int k = 0; k < 2; k++) {
    Tensor ids = row(ids2, k);
    Tensor proj;
    Tensor z1 = m.te1.hidden_layer(row(chunk_ids(chunks, m.tok, 49407), k), 1);
    Tensor z2 = m.te2.hidden_layer(ids, 1, &proj);
    EXPECT_TRUE(test::allclose(window(c.context, 77 * k, 77, 0, 64), z1, kAtol, kRtol)) << k;
    EXPECT_TRUE(test::allclose(window(c.context, 77 * k, 77, 64, 64), z2, kAtol, kRtol)) << k;
    if (k == 0) EXPECT_TRUE(test::allclose(c.pooled, proj, kAtol, kRtol));
    if (k == 1) EXPECT_FALSE(test::allclose(c.pooled, proj, 1e-3f, 0));
  }
  // The chunk boundary falls after the last comma (A1111's backtracking): not diffusers' truncation.
  EXPECT_FALSE(test::allclose(window(c.context, 0, 77, 0, 128), encode_diffusers_sdxl(m.base(), long_prompt()).context, 1e-3f, 0));
  // Padding: the short negative gets an empty-prompt chunk; n_chunks_min pads too.
  SDXLConditioningPair p = encode_prompt_pair_sdxl(m.base(), long_prompt(), "blurry", opt, true);
  ASSERT_EQ(p.uncond.context.shape(), (Shape{1, 154, 128}));
  SDXLConditioning blurry = encode_diffusers_sdxl(m.base(), "blurry"), empty = encode_diffusers_sdxl(m.base(), "");
  EXPECT_TRUE(test::allclose(window(p.uncond.context, 0, 77, 0, 128), blurry.context, kAtol, kRtol));
  EXPECT_TRUE(test::allclose(window(p.uncond.context, 77, 77, 0, 128), empty.context, kAtol, kRtol));
  EXPECT_TRUE(test::allclose(p.uncond.pooled, blurry.pooled, kAtol, kRtol));
  EXPECT_EQ(encode_prompt_sdxl(m.refiner(), "cat", opt, 3).context.shape(), (Shape{1, 231, 64}));
}

// "a (red:1.2) cat" tokenises as "a red cat" with weight 1.2 on "red" (token 2). Emphasis is applied to
// each encoder's output separately; the pooled output is unweighted.
TEST(SDXLText, EmphasisPerEncoder) {
  const Models& m = models();
  SDXLConditioning plain = encode_prompt_sdxl(m.base(), "a red cat", {});
  PromptOptions opt;
  opt.emphasis = Emphasis::NoNorm;
  SDXLConditioning w = encode_prompt_sdxl(m.base(), "a (red:1.2) cat", opt);
  EXPECT_TRUE(test::allclose(w.pooled, plain.pooled, 0, 0));
  const float* a = w.context.f32();
  const float* b = plain.context.f32();
  for (int t = 0; t < 77; t++)
    for (int ch = 0; ch < 128; ch++) {
      float want = b[t * 128 + ch] * (t == 2 ? 1.2f : 1.f);
      ASSERT_NEAR(a[t * 128 + ch], want, 1e-6f * std::fabs(want)) << t << "," << ch;
    }
  // Original: the weighted result is rescaled to the encoder's own mean, per encoder: z_e * m * (mean_e / mean_e').
  opt.emphasis = Emphasis::Original;
  w = encode_prompt_sdxl(m.base(), "a (red:1.2) cat", opt);
  double ratio[2];
  for (int e = 0; e < 2; e++) {
    double before = 0, after = 0;
    for (int t = 0; t < 77; t++)
      for (int ch = 64 * e; ch < 64 * e + 64; ch++) {
        before += b[t * 128 + ch];
        after += b[t * 128 + ch] * (t == 2 ? 1.2 : 1.0);
      }
    ratio[e] = before / after;
  }
  EXPECT_GT(std::fabs(ratio[0] - ratio[1]), 1e-4);  // one shared mean would differ
  a = w.context.f32();
  for (int t = 0; t < 77; t++)
    for (int ch = 0; ch < 128; ch++) {
      double want = b[t * 128 + ch] * (t == 2 ? 1.2 : 1.0) * ratio[ch / 64];
      // the ratio of two fp32 means of values that largely cancel: ~1e-5 relative
      ASSERT_NEAR(a[t * 128 + ch], want, 1e-6 + 1e-4 * std::fabs(want)) << t << "," << ch;
    }
  EXPECT_TRUE(test::allclose(w.pooled, plain.pooled, 0, 0));
  // Emphasis None: brackets are text.
  opt.emphasis = Emphasis::None;
  EXPECT_FALSE(test::allclose(encode_prompt_sdxl(m.base(), "a (red:1.2) cat", opt).context, plain.context, 1e-3f, 0));
}

// diffusers _get_add_time_ids: original_size + crops_coords_top_left + target_size, sizes as (h, w); the
// refiner (requires_aesthetics_score) ends with the aesthetic score instead of the target size.
TEST(SDXLText, TimeIds) {
  EXPECT_EQ(sdxl_time_ids(64, 48, 3, 5, 56, 40), (std::vector<float>{64, 48, 3, 5, 56, 40}));
  EXPECT_EQ(sdxl_refiner_time_ids(1024, 768, 16, 32, 2.5f), (std::vector<float>{1024, 768, 16, 32, 2.5f}));
}
