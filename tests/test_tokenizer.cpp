// CLIP tokenizer vs transformers' CLIPTokenizer ids (tests/fixtures/tokenizer, see its README).
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "models/tokenizer.h"

using namespace easel;

namespace {

std::string ref_text(const WeightStore& ref, int i) {
  char key[16];
  std::snprintf(key, sizeof key, "text_%02d", i);
  if (!ref.has(key)) return "";
  const Tensor& t = ref.get(key);
  return std::string((const char*)t.raw(), t.numel());
}

std::vector<int> ref_ids(const WeightStore& ref, int i) {
  char key[16];
  std::snprintf(key, sizeof key, "ids_%02d", i);
  const Tensor& t = ref.get(key);
  return std::vector<int>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
}

std::vector<int> with_special(const Tokenizer& tok, const std::string& s) {
  std::vector<int> ids = tok.encode(s);
  ids.insert(ids.begin(), tok.bos_id());
  ids.push_back(tok.eos_id());
  return ids;
}

}  // namespace

TEST(Tokenizer, VocabLayout) {
  const Tokenizer& tok = Tokenizer::clip();
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.bos_id(), 49406);
  EXPECT_EQ(tok.eos_id(), 49407);
  EXPECT_EQ(tok.pad_id(), 49407);
  EXPECT_EQ(tok.token_id("!"), 0);
  EXPECT_EQ(tok.token_id("a</w>"), 320);
  EXPECT_EQ(tok.comma_id(), 267);
  EXPECT_EQ(tok.token(256), "!</w>");
}

TEST(Tokenizer, MatchesTransformers) {
  WeightStore ref = test::load_ref("tokenizer/ref_tokens.safetensors");
  const Tokenizer& tok = Tokenizer::clip();
  int n = 0;
  for (int i = 0; i < 100; i++) {
    char key[16];
    std::snprintf(key, sizeof key, "ids_%02d", i);
    if (!ref.has(key)) break;
    std::string text = ref_text(ref, i);
    EXPECT_EQ(with_special(tok, text), ref_ids(ref, i)) << "prompt " << i << ": " << text;
    n++;
  }
  EXPECT_EQ(n, 30);
}

// Cases checked against transformers 5.24 by hand (tools/fixtures/tokenizer.py's tokenizer).
TEST(Tokenizer, EdgeCases) {
  const Tokenizer& tok = Tokenizer::clip();
  // Upper-case special tokens are not added tokens: lowercased, then split by GPT-2's regex.
  EXPECT_EQ(with_special(tok, "<|ENDOFTEXT|>"), (std::vector<int>{49406, 27, 347, 40786, 4160, 91, 285, 49407}));
  EXPECT_EQ(with_special(tok, "a<|endoftext|>b"), (std::vector<int>{49406, 320, 49407, 321, 49407}));
  EXPECT_EQ(with_special(tok, "x.'sy"), (std::vector<int>{49406, 343, 5938, 2126, 49407}));
  EXPECT_EQ(with_special(tok, "''s"), (std::vector<int>{49406, 8445, 338, 49407}));
  // U+0130 lowercases to i + U+0307; no final-sigma rule.
  EXPECT_EQ(with_special(tok, "\u0130stanbul \u03a3\u0391\u03a3"),
            (std::vector<int>{49406, 328, 16384, 11231, 139, 225, 138, 109, 139, 481, 49407}));
  // Numbers are \p{N} (No, Nl too); U+0085 is whitespace, U+180E / U+200B / U+FEFF are not.
  EXPECT_EQ(with_special(tok, "\ufb01 \u2460 \u00b2 \u216b \u00bd"),
            (std::vector<int>{49406, 171, 105, 479, 158, 239, 510, 41175, 158, 227, 375, 33613, 49407}));
  EXPECT_EQ(with_special(tok, "\u200b\ufeffa"), (std::vector<int>{49406, 17086, 171, 119, 379, 320, 49407}));
  EXPECT_EQ(with_special(tok, "a\u0085b\u180eb"), (std::vector<int>{49406, 320, 321, 157, 254, 492, 321, 49407}));
}

TEST(Tokenizer, PaddedLikeDiffusers) {
  const Tokenizer& tok = Tokenizer::clip();
  auto ids = tok.encode_padded("a photo of a cat");
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(std::vector<int>(ids.begin(), ids.begin() + 7),
            (std::vector<int>{49406, 320, 1125, 539, 320, 2368, 49407}));
  for (size_t i = 7; i < 77; i++) EXPECT_EQ(ids[i], 49407);
  auto sd2 = tok.encode_padded("a photo of a cat", 77, 0);
  EXPECT_EQ(sd2[6], 49407);
  EXPECT_EQ(sd2[7], 0);
  EXPECT_EQ(sd2[76], 0);
  // Truncation keeps BOS + 75 ids + EOS.
  WeightStore ref = test::load_ref("tokenizer/ref_tokens.safetensors");
  auto full = ref_ids(ref, 27);
  ASSERT_GT(full.size(), 77u);
  auto t = tok.encode_padded(ref_text(ref, 27));
  EXPECT_EQ(std::vector<int>(t.begin(), t.begin() + 76), std::vector<int>(full.begin(), full.begin() + 76));
  EXPECT_EQ(t[76], 49407);
  EXPECT_EQ(tok.decode(tok.encode("A Photo of a CAT, café!")), "a photo of a cat , café !");
}

// A diffusers tokenizer/ folder (vocab.json + merges.txt + tokenizer_config.json) written from the
// shipped merges gives the same ids, and its pad_token is honoured.
TEST(Tokenizer, FromFolder) {
  const Tokenizer& ref_tok = Tokenizer::clip();
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("easel_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < ref_tok.vocab_size(); i++) vocab[ref_tok.token(i)] = i;
  std::ofstream(dir / "vocab.json") << vocab.dump();
  {
    gzFile f = gzopen((std::string(EASEL_DATA_DIR) + "/bpe_simple_vocab_16e6.txt.gz").c_str(), "rb");
    ASSERT_TRUE(f);
    std::string data;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) data.append(buf, n);
    gzclose(f);
    std::ofstream m(dir / "merges.txt");
    m << "#version: 0.2\n";
    size_t pos = data.find('\n');
    for (int i = 0; i < 49152 - 256 - 2; i++) {
      size_t end = data.find('\n', pos + 1);
      m << data.substr(pos + 1, end - pos - 1) << "\n";
      pos = end;
    }
  }
  std::ofstream(dir / "tokenizer_config.json") << R"({"pad_token": "!", "model_max_length": 77})";
  Tokenizer tok = Tokenizer::from_folder(dir.string());
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.pad_id(), 0);
  WeightStore ref = test::load_ref("tokenizer/ref_tokens.safetensors");
  for (int i = 0; i < 30; i++) EXPECT_EQ(with_special(tok, ref_text(ref, i)), ref_ids(ref, i)) << "prompt " << i;
  fs::remove_all(dir);
  EXPECT_THROW(Tokenizer::from_folder(dir.string()), Error);
}

// The tokenizer/ folder that diffusers' save_pretrained wrote for the tiny SD1 model.
TEST(Tokenizer, DiffusersFixtureFolder) {
  Tokenizer tok = Tokenizer::from_folder(test::fixture("sd1/diffusers/tokenizer"));
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.pad_id(), 49407);
  WeightStore ref = test::load_ref("tokenizer/ref_tokens.safetensors");
  for (int i = 0; i < 30; i++) EXPECT_EQ(with_special(tok, ref_text(ref, i)), ref_ids(ref, i)) << "prompt " << i;
}
