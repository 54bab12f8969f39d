// Prompt -> cross-attention conditioning, as A1111 (FrozenCLIPEmbedderWithCustomWords) and diffusers.
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_hijack_clip.py
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_emphasis.py
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion.py
//
// A1111 path (encode_prompt): <lora:...> tags removed; attention syntax parsed; 75-token chunks
// (BREAK, comma backtracking; see models/prompt.h); each chunk [BOS, 75 ids, EOS] encoded on its own,
// with ids after the first EOS set to pad_id (SD2 pads with 0, SD1 with EOS); then emphasis
// ("Original": z *= weight per token, then z *= mean(z_before) / mean(z_after), per chunk); chunks
// concatenated along the sequence: [1, 77*k, C].
// For a prompt without emphasis and <= 75 tokens this equals diffusers' encode (encode_diffusers).
// A1111 differences left to the caller: it ignores "Clip skip" for SD2 (OpenCLIP) models, so pass
// clip_skip 1 there to match it; prompt editing "[a:b:0.5]" and "AND" are handled before this
// (prompt_schedule / split_and in models/prompt.h); its SD2 tokenizer (open_clip's) also
// html-unescapes and runs ftfy, which we do not.
#pragma once
#include <string>

#include "models/clip.h"
#include "models/prompt.h"
#include "models/tokenizer.h"

namespace easel {

enum class Emphasis {
  Original,  // A1111 default: multiply, then restore the mean
  NoNorm,    // multiply only
  None,      // brackets are plain text, weights 1
};

struct PromptOptions {
  int clip_skip = 1;      // A1111 convention: 1 = last layer, 2 = penultimate (+ final_layer_norm)
  int pad_id = 49407;     // ModelConfig::pad_token_id (SD1 49407, SD2 0)
  Emphasis emphasis = Emphasis::Original;
  int comma_backtrack = 20;  // opts.comma_padding_backtrack
};

// A1111: prompt -> [1, 77*k, C], k >= max(1, n_chunks_min); missing chunks are empty-prompt chunks
// (A1111's pad_cond with cond_stage_model_empty_prompt).
Tensor encode_prompt(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt,
                     const PromptOptions& opt = {}, int n_chunks_min = 1);
// Same, spelled as in the design notes.
inline Tensor encode_prompt(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt, int clip_skip,
                            int pad_id, int n_chunks_min = 1) {
  PromptOptions o;
  o.clip_skip = clip_skip;
  o.pad_id = pad_id;
  return encode_prompt(clip, tok, prompt, o, n_chunks_min);
}

// Number of 77-token chunks encode_prompt gives for this prompt (before n_chunks_min).
int prompt_chunk_count(const Tokenizer& tok, const std::string& prompt, const PromptOptions& opt = {});

// (cond, uncond) for classifier-free guidance, padded to the same number of chunks: the shorter one
// gets empty-prompt chunks appended (A1111's opts.pad_cond_uncond; with that option off A1111 runs
// the two halves through the UNet separately instead, at their own lengths).
struct Conditioning {
  Tensor cond;    // [1, 77*k, C]
  Tensor uncond;  // [1, 77*k, C]
};
Conditioning encode_prompt_pair(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt,
                                const std::string& negative_prompt, const PromptOptions& opt = {});

// diffusers' _encode_prompt: tokenizer(padding="max_length", max_length=77, truncation=True), no
// attention syntax, clip_skip in A1111 convention (diffusers' clip_skip = this - 1) -> [1, 77, C].
Tensor encode_diffusers(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt, int clip_skip = 1,
                        int pad_id = 49407);

// The A1111 chunks of a prompt (<lora:> tags removed; attention syntax unless opt.emphasis is None).
std::vector<PromptChunk> prompt_chunks(const Tokenizer& tok, const std::string& prompt, const PromptOptions& opt = {});
// Chunks -> ids [n, 77] (i64), ids after each chunk's first EOS set to pad_id; the per-token
// multipliers are appended to *multipliers when given.
Tensor chunk_ids(const std::vector<PromptChunk>& chunks, const Tokenizer& tok, int pad_id,
                 std::vector<float>* multipliers = nullptr);

// Emphasis on one encoded chunk batch: z [n, 77, C] *= multipliers [n*77], mean restored per chunk
// (Original) or not (NoNorm). Exposed for tests.
void apply_emphasis(Tensor& z, const std::vector<float>& multipliers, Emphasis mode);

}  // namespace easel
