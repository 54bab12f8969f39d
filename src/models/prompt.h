// A1111 prompt syntax: attention weights, BREAK, extra-network (<lora:...>) tags, and the
// 75-token chunking of FrozenCLIPEmbedderWithCustomWords.
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/prompt_parser.py
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_hijack_clip.py
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/extra_networks.py
#pragma once
#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace easel {

// One run of text with its attention weight. A BREAK keyword is {"BREAK", -1}.
struct WeightedText {
  std::string text;
  double weight = 1.0;  // double, as Python's floats: runs are merged on exact equality
  bool operator==(const WeightedText& o) const { return text == o.text && weight == o.weight; }
};

// parse_prompt_attention: "(x)" x1.1, "[x]" /1.1, "(x:1.3)", escapes \( \) \[ \] \\, unbalanced
// brackets closed at the end, "BREAK" (a whole word) split out; adjacent equal weights merged.
// Throws Error on a malformed number in "(x:1.2.3)" (A1111 raises too).
std::vector<WeightedText> parse_prompt_attention(const std::string& text);

// A <lora:name:te[:unet]> tag (also <lyco:...>). Named forms te=, unet= are honoured as A1111 does.
struct LoraTag {
  std::string name;
  float te_weight = 1.f;
  float unet_weight = 1.f;  // defaults to te_weight
};

// Removes every extra-network tag <type:args> (regex <(\w+):([^>]+)>) from the prompt, as A1111
// does before parsing, and returns the text left; LoRA tags are appended to *loras when given.
std::string extract_lora_tags(const std::string& prompt, std::vector<LoraTag>* loras = nullptr);

// A1111 prompt editing (get_learned_conditioning_prompt_schedules): "[from:to:when]",
// "[to:when]", "[from::when]" (when < 1 with a '.' = fraction of steps, else a step number) and
// alternation "[a|b|c]" (one option per step). Returns the distinct texts with the last step
// (1-based, inclusive) each is used for; the last entry ends at `steps`. A prompt the grammar
// rejects (e.g. a '|' outside brackets) is one entry, unchanged. hires_steps > 0: the schedule of
// a hires pass of that many steps (integers offset by `steps`, fractions by 1.0), as A1111.
// Other brackets are kept verbatim for parse_prompt_attention. Where a stray bracket touches a
// construct ("[a:b:0.5]:" at top level) A1111's Earley parse is ambiguous and its choice varies with
// PYTHONHASHSEED; we always take the construct. Well-formed prompts match A1111 exactly.
struct ScheduledPrompt {
  int end_at_step;
  std::string text;
};
std::vector<ScheduledPrompt> prompt_schedule(const std::string& prompt, int steps, int hires_steps = 0);
// The text for a 0-based sampler step: the first entry with step <= end_at_step (A1111's
// reconstruct_cond_batch with its step counter, so "[a:b:0.5]" at 10 steps uses a for steps 0..5).
const std::string& prompt_at_step(const std::vector<ScheduledPrompt>& schedule, int step);

// A1111 composable diffusion (get_multicond_prompt_list): the prompt split on the word AND, each
// part with an optional trailing ":weight" (default 1), e.g. "a cat:1.2 AND a dog" ->
// {"a cat", 1.2}, {" a dog", 1}. The sampler combines the parts' guidance with these weights.
struct SubPrompt {
  std::string text;
  double weight = 1.0;
  bool operator==(const SubPrompt& o) const { return text == o.text && weight == o.weight; }
};
std::vector<SubPrompt> split_and(const std::string& prompt);

// One encoder window: BOS + 75 ids + EOS (77), padded with EOS, and a weight per position.
struct PromptChunk {
  std::vector<int> tokens;
  std::vector<float> multipliers;
};

struct ChunkOptions {
  int chunk_length = 75;    // ids per chunk, without BOS/EOS
  int comma_backtrack = 20; // opts.comma_padding_backtrack (0 disables)
  bool emphasis = true;     // false = opts.emphasis "None": the whole line at weight 1
};

// tokenize_line: parse, tokenize each run separately (as A1111), split into chunks (BREAK starts a new
// chunk; a full chunk moves the words after its last comma, if within comma_backtrack, to the next).
// Always at least one chunk. *token_count gets A1111's token count (for "75/150" displays).
std::vector<PromptChunk> chunk_prompt(const Tokenizer& tok, const std::string& prompt,
                                      const ChunkOptions& opt = {}, int* token_count = nullptr);
// BOS + EOS * 76, weights 1 (A1111's empty_chunk; the padding for shorter prompts).
PromptChunk empty_chunk(const Tokenizer& tok, int chunk_length = 75);

}  // namespace easel
