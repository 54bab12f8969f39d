// SDXL text conditioning; see conditioner_sdxl.h for the references.
#include "models/conditioner_sdxl.h"

#include <algorithm>

#include "core/error.h"

namespace easel {

namespace {

struct Encoder {
  const CLIPTextModel* te;
  const Tokenizer* tok;
  int pad_id;
  bool pooled;  // the encoder with the projection (the last one)
};

// The encoders in context order: [CLIP-L,] bigG.
std::vector<Encoder> encoders(const SDXLTextEncoders& e) {
  if (!e.te2 || !e.tok2) fail("sdxl", "text conditioning needs text_encoder_2 and tokenizer_2");
  if (!e.te2->text_projection.defined())
    fail("sdxl", "text_encoder_2 has no text_projection.weight (needed for the pooled text embeds)");
  std::vector<Encoder> v;
  if (e.te1) {
    if (!e.tok1) fail("sdxl", "text_encoder is set but tokenizer is not");
    v.push_back({e.te1, e.tok1, e.pad_id_1, false});
  }
  v.push_back({e.te2, e.tok2, e.pad_id_2, true});
  return v;
}

// Chunks for each encoder, all padded with empty-prompt chunks to max(k_min, longest).
std::vector<std::vector<PromptChunk>> chunks_for(const std::vector<Encoder>& encs, const std::string& prompt,
                                                 const PromptOptions& opt) {
  std::vector<std::vector<PromptChunk>> c;
  for (const Encoder& e : encs) c.push_back(prompt_chunks(*e.tok, prompt, opt));
  return c;
}

size_t max_chunks(const std::vector<std::vector<PromptChunk>>& c, size_t k) {
  for (auto& v : c) k = std::max(k, v.size());
  return k;
}

SDXLConditioning encode_chunks(const std::vector<Encoder>& encs, std::vector<std::vector<PromptChunk>> chunks,
                               size_t k, const PromptOptions& opt) {
  SDXLConditioning out;
  std::vector<Tensor> ctx;
  for (size_t i = 0; i < encs.size(); i++) {
    const Encoder& e = encs[i];
    chunks[i].resize(k, empty_chunk(*e.tok));
    std::vector<float> mult;
    Tensor ids = chunk_ids(chunks[i], *e.tok, e.pad_id, &mult);  // [k, 77]
    Tensor proj;
    Tensor z = e.te->hidden_layer(ids, opt.clip_skip, e.pooled ? &proj : nullptr, e.tok->eos_id());  // [k, 77, C]
    apply_emphasis(z, mult, opt.emphasis);  // per encoder, per chunk (A1111 per embedder)
    ctx.push_back(z.reshape({1, z.size(0) * z.size(1), z.size(2)}));
    if (e.pooled) out.pooled = proj.slice0(0, 1);  // first chunk's: [1, proj]
  }
  out.context = ctx.size() == 1 ? ctx[0] : ops::concat(ctx, 2);  // [1, 77k, C1 + C2]
  return out;
}

SDXLConditioning zeros_like(const SDXLConditioning& c) {
  return {Tensor::zeros(c.context.shape()), Tensor::zeros(c.pooled.shape())};
}

}  // namespace

SDXLConditioning encode_prompt_sdxl(const SDXLTextEncoders& enc, const std::string& prompt, const PromptOptions& opt,
                                    int n_chunks_min) {
  auto encs = encoders(enc);
  auto c = chunks_for(encs, prompt, opt);
  const size_t k = max_chunks(c, (size_t)std::max(1, n_chunks_min));
  return encode_chunks(encs, std::move(c), k, opt);
}

SDXLConditioningPair encode_prompt_pair_sdxl(const SDXLTextEncoders& enc, const std::string& prompt,
                                             const std::string& negative, const PromptOptions& opt,
                                             bool zero_empty_negative) {
  auto encs = encoders(enc);
  auto c = chunks_for(encs, prompt, opt), u = chunks_for(encs, negative, opt);
  const size_t k = max_chunks(u, max_chunks(c, 1));
  SDXLConditioningPair p;
  p.cond = encode_chunks(encs, std::move(c), k, opt);
  p.uncond = zero_empty_negative && negative.empty() ? zeros_like(p.cond) : encode_chunks(encs, std::move(u), k, opt);
  return p;
}

SDXLConditioning encode_diffusers_sdxl(const SDXLTextEncoders& enc, const std::string& prompt,
                                       int diffusers_clip_skip) {
  if (diffusers_clip_skip < 0) fail("sdxl", "clip_skip must be >= 0");
  SDXLConditioning out;
  std::vector<Tensor> ctx;
  for (const Encoder& e : encoders(enc)) {
    const int L = e.te->config.max_position_embeddings;
    std::vector<int> v = e.tok->encode_padded(prompt, L, e.pad_id);
    Tensor ids = Tensor::empty({1, L}, DType::I64);
    std::copy(v.begin(), v.end(), ids.data<int64_t>());
    ctx.push_back(e.te->hidden_layer(ids, diffusers_clip_skip + 1, e.pooled ? &out.pooled : nullptr,
                                     e.tok->eos_id()));  // [1, 77, C]
  }
  out.context = ctx.size() == 1 ? ctx[0] : ops::concat(ctx, 2);
  return out;
}

std::vector<float> sdxl_time_ids(int orig_h, int orig_w, int crop_top, int crop_left, int target_h, int target_w) {
  return {(float)orig_h, (float)orig_w, (float)crop_top, (float)crop_left, (float)target_h, (float)target_w};
}

std::vector<float> sdxl_refiner_time_ids(int orig_h, int orig_w, int crop_top, int crop_left, float aesthetic_score) {
  return {(float)orig_h, (float)orig_w, (float)crop_top, (float)crop_left, aesthetic_score};
}

}  // namespace easel
