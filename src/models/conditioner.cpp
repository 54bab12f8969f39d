// Prompt conditioning; see conditioner.h for the references and the exact A1111 behaviour.
#include "models/conditioner.h"

#include <algorithm>

#include "core/error.h"

namespace easel {

namespace {

// Encodes chunks as one batch [n, 77] -> [1, 77*n, C] with emphasis.
Tensor encode_chunks(const CLIPTextModel& clip, const Tokenizer& tok, const std::vector<PromptChunk>& chunks,
                     const PromptOptions& opt) {
  const int64_t n = (int64_t)chunks.size(), L = (int64_t)chunks[0].tokens.size();
  std::vector<float> mult;
  Tensor ids = chunk_ids(chunks, tok, opt.pad_id, &mult);  // [n, 77]
  Tensor z = clip.forward(ids, opt.clip_skip);  // [n, 77, C]
  apply_emphasis(z, mult, opt.emphasis);
  return z.reshape({1, n * L, z.size(2)});
}

}  // namespace

std::vector<PromptChunk> prompt_chunks(const Tokenizer& tok, const std::string& prompt, const PromptOptions& opt) {
  ChunkOptions co;
  co.comma_backtrack = opt.comma_backtrack;
  co.emphasis = opt.emphasis != Emphasis::None;
  return chunk_prompt(tok, extract_lora_tags(prompt), co);
}

Tensor chunk_ids(const std::vector<PromptChunk>& chunks, const Tokenizer& tok, int pad_id, std::vector<float>* mult) {
  if (chunks.empty()) fail("conditioner", "chunk_ids: no chunks");
  const int64_t n = (int64_t)chunks.size(), L = (int64_t)chunks[0].tokens.size();
  Tensor ids = Tensor::empty({n, L}, DType::I64);
  for (int64_t c = 0; c < n; c++) {
    const auto& t = chunks[c].tokens;
    int64_t* row = ids.data<int64_t>() + c * L;
    bool after_eos = false;  // SD2: everything after the first EOS becomes pad_id
    for (int64_t i = 0; i < L; i++) {
      row[i] = after_eos && tok.eos_id() != pad_id ? pad_id : t[i];
      after_eos |= t[i] == tok.eos_id();
    }
    if (mult) mult->insert(mult->end(), chunks[c].multipliers.begin(), chunks[c].multipliers.end());
  }
  return ids;
}

void apply_emphasis(Tensor& z, const std::vector<float>& mult, Emphasis mode) {
  const int64_t n = z.size(0), L = z.size(1), C = z.size(2);
  if ((int64_t)mult.size() != n * L)
    fail("conditioner", "emphasis: " + std::to_string(mult.size()) + " multipliers for " + z.str());
  if (mode == Emphasis::None) return;
  for (int64_t c = 0; c < n; c++) {
    const float* m = mult.data() + c * L;
    if (std::all_of(m, m + L, [](float v) { return v == 1.f; })) continue;  // exactly a no-op in A1111 too
    float* zp = z.f32() + c * L * C;
    double before = 0, after = 0;
    for (int64_t i = 0; i < L * C; i++) before += zp[i];
    for (int64_t t = 0; t < L; t++)
      for (int64_t k = 0; k < C; k++) {
        zp[t * C + k] *= m[t];
        after += zp[t * C + k];
      }
    if (mode == Emphasis::Original) {
      // torch: z * (original_mean / new_mean), float32 scalars.
      float ratio = (float)(before / (L * C)) / (float)(after / (L * C));
      for (int64_t i = 0; i < L * C; i++) zp[i] *= ratio;
    }
  }
}

int prompt_chunk_count(const Tokenizer& tok, const std::string& prompt, const PromptOptions& opt) {
  return (int)prompt_chunks(tok, prompt, opt).size();
}

Tensor encode_prompt(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt,
                     const PromptOptions& opt, int n_chunks_min) {
  auto chunks = prompt_chunks(tok, prompt, opt);
  if ((int)chunks.size() < n_chunks_min) chunks.resize(n_chunks_min, empty_chunk(tok));
  return encode_chunks(clip, tok, chunks, opt);
}

Conditioning encode_prompt_pair(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt,
                                const std::string& negative_prompt, const PromptOptions& opt) {
  auto c = prompt_chunks(tok, prompt, opt), u = prompt_chunks(tok, negative_prompt, opt);
  size_t k = std::max(c.size(), u.size());
  c.resize(k, empty_chunk(tok));
  u.resize(k, empty_chunk(tok));
  return {encode_chunks(clip, tok, c, opt), encode_chunks(clip, tok, u, opt)};
}

Tensor encode_diffusers(const CLIPTextModel& clip, const Tokenizer& tok, const std::string& prompt, int clip_skip,
                        int pad_id) {
  const int L = clip.config.max_position_embeddings;
  std::vector<int> v = tok.encode_padded(prompt, L, pad_id);
  Tensor ids = Tensor::empty({1, L}, DType::I64);
  for (int i = 0; i < L; i++) ids.data<int64_t>()[i] = v[i];
  return clip.forward(ids, clip_skip);
}

}  // namespace easel
