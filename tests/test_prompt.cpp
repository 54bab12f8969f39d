// A1111 prompt parsing, extra-network tags and chunking. Expected values come from A1111's
// modules/prompt_parser.py (its docstring examples, then the same function run on more cases) and
// sd_hijack_clip.py's tokenize_line run with transformers' CLIPTokenizer.
#include "common.h"
#include "models/prompt.h"

using namespace easel;
using W = std::vector<WeightedText>;

TEST(PromptAttention, A1111Docstring) {
  EXPECT_EQ(parse_prompt_attention("normal text"), (W{{"normal text", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("an (important) word"), (W{{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("(unbalanced"), (W{{"unbalanced", 1.1}}));
  EXPECT_EQ(parse_prompt_attention("\\(literal\\]"), (W{{"(literal]", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("(unnecessary)(parens)"), (W{{"unnecessaryparens", 1.1}}));
  EXPECT_EQ(parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            (W{{"a ", 1.0},
               {"house", 1.5730000000000004},
               {" ", 1.1},
               {"on", 1.0},
               {" a ", 1.1},
               {"hill", 0.55},
               {", sun, ", 1.1},
               {"sky", 1.4641000000000006},
               {".", 1.1}}));
}

TEST(PromptAttention, MoreCasesFromA1111) {
  EXPECT_EQ(parse_prompt_attention(""), (W{{"", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("a BREAK b"), (W{{"a", 1.0}, {"BREAK", -1}, {"b", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("BREAK"), (W{{"", 1.0}, {"BREAK", -1}, {"", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("aBREAK b"), (W{{"aBREAK b", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("a BREAKb"), (W{{"a BREAKb", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("_BREAK"), (W{{"_BREAK", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("a\tBREAK\n b BREAK  BREAK c"),
            (W{{"a", 1.0}, {"BREAK", -1}, {"b", 1.0}, {"BREAK", -1}, {"", 1.0}, {"BREAK", -1}, {"c", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("\u00e9 BREAK \u00fc"), (W{{"\u00e9", 1.0}, {"BREAK", -1}, {"\u00fc", 1.0}}));
  // BREAK inside brackets is scaled too (and then no longer acts as BREAK).
  EXPECT_EQ(parse_prompt_attention("(a BREAK b)"), (W{{"a", 1.1}, {"BREAK", -1.1}, {"b", 1.1}}));
  EXPECT_EQ(parse_prompt_attention("[[x]]"), (W{{"x", 0.8264462809917354}}));
  EXPECT_EQ(parse_prompt_attention("(x:1.2.3"), (W{{"x:1.2.3", 1.1}}));
  EXPECT_EQ(parse_prompt_attention(":1.2) x"), (W{{":1.2) x", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("(x : -0.5 )"), (W{{"x ", -0.5}}));
  EXPECT_EQ(parse_prompt_attention("a\\b"), (W{{"ab", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("a\\"), (W{{"a", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("[x:0.5]"), (W{{"x:0.5", 0.9090909090909091}}));
  EXPECT_EQ(parse_prompt_attention("(x:.5)"), (W{{"x", 0.5}}));
  EXPECT_EQ(parse_prompt_attention("(x:+1.5)"), (W{{"x", 1.5}}));
  EXPECT_EQ(parse_prompt_attention("((x)"), (W{{"x", 1.2100000000000002}}));
  EXPECT_EQ(parse_prompt_attention("[a (b] c)"), (W{{"a ", 0.9090909090909091}, {"b", 1.0}, {" c", 1.1}}));
  EXPECT_EQ(parse_prompt_attention("x:y"), (W{{"x:y", 1.0}}));
  EXPECT_EQ(parse_prompt_attention("(a:1e2)"), (W{{"a:1e2", 1.1}}));
  EXPECT_THROW(parse_prompt_attention("(x:1.2.3)"), Error);  // Python's float() raises
}

TEST(PromptLora, Tags) {
  std::vector<LoraTag> l;
  EXPECT_EQ(extract_lora_tags("a cat, <lora:myLora:0.8> style", &l), "a cat,  style");
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].name, "myLora");
  EXPECT_FLOAT_EQ(l[0].te_weight, 0.8f);
  EXPECT_FLOAT_EQ(l[0].unet_weight, 0.8f);
  l.clear();
  EXPECT_EQ(extract_lora_tags("<lora:a:0.5:1.2>x<lyco:b><hypernet:h:1>y<lora:c:te=0.3:unet=0.7>", &l), "xy");
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].name, "a");
  EXPECT_FLOAT_EQ(l[0].te_weight, 0.5f);
  EXPECT_FLOAT_EQ(l[0].unet_weight, 1.2f);
  EXPECT_EQ(l[1].name, "b");
  EXPECT_FLOAT_EQ(l[1].te_weight, 1.f);
  EXPECT_FLOAT_EQ(l[1].unet_weight, 1.f);
  EXPECT_EQ(l[2].name, "c");
  EXPECT_FLOAT_EQ(l[2].te_weight, 0.3f);
  EXPECT_FLOAT_EQ(l[2].unet_weight, 0.7f);
  // Not tags: no word before ':', nothing after it, no closing '>'.
  l.clear();
  EXPECT_EQ(extract_lora_tags("<:x> <lora:> a <b <lora:x", &l), "<:x> <lora:> a <b <lora:x");
  EXPECT_TRUE(l.empty());
  EXPECT_THROW(extract_lora_tags("<lora:x:abc>", &l), Error);
}

namespace {
struct ChunkSummary {
  int content;  // ids before the EOS padding
  int first, last;
};
std::vector<ChunkSummary> summarize(const std::vector<PromptChunk>& cs) {
  std::vector<ChunkSummary> out;
  for (auto& c : cs) {
    EXPECT_EQ(c.tokens.size(), 77u);
    EXPECT_EQ(c.multipliers.size(), 77u);
    EXPECT_EQ(c.tokens[0], 49406);
    EXPECT_EQ(c.tokens[76], 49407);
    int n = 76;
    while (n > 1 && c.tokens[n - 1] == 49407) n--;
    out.push_back({n - 1, c.tokens[1], c.tokens[n - 1]});
  }
  return out;
}
void expect_chunks(const std::string& prompt, int token_count, std::vector<ChunkSummary> want) {
  int tc = -1;
  auto got = summarize(chunk_prompt(Tokenizer::clip(), prompt, {}, &tc));
  EXPECT_EQ(tc, token_count) << prompt;
  ASSERT_EQ(got.size(), want.size()) << prompt;
  for (size_t i = 0; i < got.size(); i++) {
    EXPECT_EQ(got[i].content, want[i].content) << prompt << " chunk " << i;
    EXPECT_EQ(got[i].first, want[i].first) << prompt << " chunk " << i;
    EXPECT_EQ(got[i].last, want[i].last) << prompt << " chunk " << i;
  }
}
}  // namespace

TEST(PromptChunks, MatchA1111) {
  std::string tags;
  for (int i = 0; i < 60; i++) tags += (i ? ", tag" : "tag") + std::to_string(i);
  // Comma backtracking: chunks end at the last comma within 20 tokens of the boundary.
  expect_chunks(tags, 232, {{74, 3640, 267}, {75, 3640, 280}, {73, 267, 267}, {7, 3640, 280}});
  std::string photo, landscape, cat75, cat76;
  for (int i = 0; i < 100; i++) photo += "photo ";
  for (int i = 0; i < 6; i++)
    landscape += (i ? " " : "") + std::string("a beautiful landscape with mountains, rivers, trees and a small house");
  for (int i = 0; i < 75; i++) cat75 += "cat ";
  cat76 = cat75 + "cat ";
  expect_chunks(photo, 100, {{75, 1125, 1125}, {25, 1125, 1125}});
  expect_chunks(landscape, 80, {{73, 320, 267}, {5, 4682, 1212}});
  expect_chunks(cat75, 75, {{75, 2368, 2368}});
  expect_chunks(cat76, 76, {{75, 2368, 2368}, {1, 2368, 2368}});
  expect_chunks("a red cat BREAK a blue (dog:1.3), [sky]", 80, {{3, 320, 2368}, {5, 320, 2390}});
  // Empty prompt: one empty chunk.
  auto e = chunk_prompt(Tokenizer::clip(), "");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].tokens, empty_chunk(Tokenizer::clip()).tokens);
}

TEST(PromptChunks, Multipliers) {
  auto c = chunk_prompt(Tokenizer::clip(), "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).");
  ASSERT_EQ(c.size(), 1u);
  // float32 of A1111's double weights, per token position (BOS at 0).
  std::vector<float> want(77, 1.f);
  want[2] = 1.5730000000000004f;
  want[4] = 1.1f;
  want[5] = 0.55f;
  for (int i = 6; i <= 8; i++) want[i] = 1.1f;  // ", sun,"
  want[9] = 1.4641000000000006f;
  want[10] = 1.1f;
  EXPECT_EQ(c[0].multipliers, want);
  auto b = chunk_prompt(Tokenizer::clip(), "a red cat BREAK a blue (dog:1.3), [sky]");
  ASSERT_EQ(b.size(), 2u);
  EXPECT_FLOAT_EQ(b[1].multipliers[3], 1.3f);
  EXPECT_FLOAT_EQ(b[1].multipliers[4], 1.f);
  EXPECT_FLOAT_EQ(b[1].multipliers[5], (float)(1 / 1.1));
  // Emphasis off: parentheses are literal text.
  ChunkOptions off;
  off.emphasis = false;
  auto n = chunk_prompt(Tokenizer::clip(), "(dog:1.3)", off);
  for (float m : n[0].multipliers) EXPECT_EQ(m, 1.f);
  EXPECT_EQ(n[0].tokens[1], Tokenizer::clip().encode("(")[0]);
}

namespace {
using Sched = std::vector<std::pair<int, std::string>>;
Sched sched(const std::string& p, int steps, int hires = 0) {
  Sched out;
  for (auto& e : prompt_schedule(p, steps, hires)) out.push_back({e.end_at_step, e.text});
  return out;
}
}  // namespace

// A1111's get_learned_conditioning_prompt_schedules docstring (results checked with lark 1.1.2, the
// version A1111 pins), plus more cases run through the same function.
TEST(PromptSchedule, A1111Docstring) {
  EXPECT_EQ(sched("test", 10), (Sched{{10, "test"}}));
  EXPECT_EQ(sched("a [b:3]", 10), (Sched{{3, "a "}, {10, "a b"}}));
  EXPECT_EQ(sched("a [b: 3]", 10), (Sched{{3, "a "}, {10, "a b"}}));
  EXPECT_EQ(sched("a [[[b]]:2]", 10), (Sched{{2, "a "}, {10, "a [[b]]"}}));
  EXPECT_EQ(sched("[(a:2):3]", 10), (Sched{{3, ""}, {10, "(a:2)"}}));
  EXPECT_EQ(sched("a [b : c : 1] d", 10), (Sched{{1, "a b  d"}, {10, "a  c  d"}}));
  EXPECT_EQ(sched("a[b:[c:d:2]:1]e", 10), (Sched{{1, "abe"}, {2, "ace"}, {10, "ade"}}));
  EXPECT_EQ(sched("a [unbalanced", 10), (Sched{{10, "a [unbalanced"}}));
  EXPECT_EQ(sched("a [b:.5] c", 10), (Sched{{5, "a  c"}, {10, "a b c"}}));
  EXPECT_EQ(sched("((a][:b:c [d:3]", 10), (Sched{{3, "((a][:b:c "}, {10, "((a][:b:c d"}}));
  EXPECT_EQ(sched("[fe|||]male", 10), (Sched{{1, "female"}, {2, "male"}, {3, "male"}, {4, "male"}, {5, "female"},
                                             {6, "male"}, {7, "male"}, {8, "male"}, {9, "female"}, {10, "male"}}));
  EXPECT_EQ(sched("a [b:.5] c", 10, 10), (Sched{{10, "a b c"}}));
  EXPECT_EQ(sched("a [b:1.5] c", 10, 10), (Sched{{5, "a  c"}, {10, "a b c"}}));
}

TEST(PromptSchedule, MoreCases) {
  EXPECT_EQ(sched("[fe|male]", 4), (Sched{{1, "fe"}, {2, "male"}, {3, "fe"}, {4, "male"}}));
  EXPECT_EQ(sched("[a|[b:c:2]]x", 4), (Sched{{1, "ax"}, {2, "bx"}, {3, "ax"}, {4, "cx"}}));
  EXPECT_EQ(sched("[a:b:-1]", 10), (Sched{{10, "b"}}));
  EXPECT_EQ(sched("[a:b:1e1]", 10), (Sched{{10, "a"}}));
  EXPECT_EQ(sched("[a: b :3 ]", 10), (Sched{{3, "a"}, {10, " b "}}));
  EXPECT_EQ(sched("[a:b:0.29]", 100), (Sched{{28, "a"}, {100, "b"}}));  // int(0.29 * 100) = 28 in doubles
  EXPECT_EQ(sched("a | b", 10), (Sched{{10, "a | b"}}));                  // grammar error: unchanged
  EXPECT_EQ(sched("a\\", 10), (Sched{{10, "a\\"}}));
  EXPECT_EQ(sched("(cat:1.2) [dog::0.5] \\[x\\]", 4), (Sched{{2, "(cat:1.2) dog \\[x\\]"}, {4, "(cat:1.2)  \\[x\\]"}}));
  auto s = prompt_schedule("[a:b:0.5]", 10);
  EXPECT_EQ(prompt_at_step(s, 0), "a");
  EXPECT_EQ(prompt_at_step(s, 5), "a");  // A1111's step counter starts at 0: a for 6 steps
  EXPECT_EQ(prompt_at_step(s, 6), "b");
  EXPECT_EQ(prompt_at_step(s, 99), "b");
}

TEST(PromptAnd, SplitLikeA1111) {
  using S = std::vector<SubPrompt>;
  EXPECT_EQ(split_and("a cat AND a dog"), (S{{"a cat", 1.0}, {" a dog", 1.0}}));
  EXPECT_EQ(split_and("a cat:1.2 AND a dog : 0.5 "), (S{{"a cat", 1.2}, {" a dog", 0.5}}));
  EXPECT_EQ(split_and("ANDROID AND"), (S{{"ANDROID", 1.0}, {"", 1.0}}));
  EXPECT_EQ(split_and("x:1.2:3"), (S{{"x:1.2", 3.0}}));
  EXPECT_EQ(split_and("(x:1.2)"), (S{{"(x:1.2)", 1.0}}));
  EXPECT_EQ(split_and("AND"), (S{{"", 1.0}, {"", 1.0}}));
  EXPECT_EQ(split_and("a\nAND b:-.5"), (S{{"a", 1.0}, {" b", -0.5}}));
  EXPECT_EQ(split_and("c:1."), (S{{"c", 1.0}}));
  EXPECT_EQ(split_and("d: +2 \n"), (S{{"d", 2.0}}));
  EXPECT_EQ(split_and("e:."), (S{{"e:.", 1.0}}));
  EXPECT_EQ(split_and("f :"), (S{{"f :", 1.0}}));
  EXPECT_EQ(split_and("_AND_ ANDx AND"), (S{{"_AND_ ANDx", 1.0}, {"", 1.0}}));
}
