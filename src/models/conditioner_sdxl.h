// SDXL text conditioning: two text encoders (CLIP ViT-L + OpenCLIP ViT-bigG with its projection),
// as diffusers' StableDiffusionXLPipeline.encode_prompt and A1111's SDXL conditioner.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_models_xl.py
//   https://github.com/Stability-AI/generative-models/blob/main/sgm/modules/encoders/modules.py
// Paper: Podell et al., "SDXL", https://arxiv.org/abs/2307.01952
//
// Each encoder's context is hidden_states[-(clip_skip+1)] RAW (no final_layer_norm); the pooled vector
// is text_projection(final_layer_norm(last layer of encoder 2) at the first EOS). transformers picks
// that row by argmax(ids) for configs with the legacy eos_token_id 2 (SDXL's real text_encoder_2) and
// by the first eos_token_id otherwise; both are the first EOS for ids padded with "!" (0) or with EOS.
// The contexts are concatenated on channels: [1, 77k, C1 + C2] (refiner: encoder 2 only, [1, 77k, C2]).
#pragma once
#include <string>
#include <vector>

#include "models/clip.h"
#include "models/conditioner.h"
#include "models/tokenizer.h"

namespace easel {

struct SDXLTextEncoders {
  const CLIPTextModel* te1 = nullptr;  // CLIP-L; null for the refiner
  const Tokenizer* tok1 = nullptr;
  const CLIPTextModel* te2 = nullptr;  // bigG with text_projection
  const Tokenizer* tok2 = nullptr;
  int pad_id_1 = 49407, pad_id_2 = 0;  // ModelConfig::pad_token_id / pad_token_id_2
};

struct SDXLConditioning {
  Tensor context;  // [1, 77k, C1+C2] (refiner [1, 77k, C2])
  Tensor pooled;   // [1, proj]
};

struct SDXLConditioningPair {
  SDXLConditioning cond, uncond;
};

// A1111 path: <lora:> tags removed, attention syntax, BREAK, 75-token chunks (chunk_prompt), emphasis
// applied to each encoder's output separately (A1111 does it per embedder), pooled from the first chunk
// (unaffected by emphasis). opt.clip_skip (A1111 convention) N >= 1 -> hidden_states[-(N+1)] raw:
// N = 1 (default) = penultimate = SDXL's default; diffusers' clip_skip k = N - 1. opt.pad_id is ignored
// (the pads come from SDXLTextEncoders). k >= max(1, n_chunks_min); missing chunks are empty prompts.
SDXLConditioning encode_prompt_sdxl(const SDXLTextEncoders& enc, const std::string& prompt, const PromptOptions& opt,
                                    int n_chunks_min = 1);

// (cond, uncond) padded to the same number of chunks with empty-prompt chunks. zero_empty_negative
// (diffusers' force_zeros_for_empty_prompt, also A1111's behaviour for an empty negative): an empty
// negative gives zeros, context [1, 77k, C] and pooled [1, proj] (zeros over all k chunks: with zero
// keys/values the UNet's cross-attention gives the same result as A1111's unpadded 77-token zeros).
SDXLConditioningPair encode_prompt_pair_sdxl(const SDXLTextEncoders& enc, const std::string& prompt,
                                             const std::string& negative, const PromptOptions& opt,
                                             bool zero_empty_negative);

// diffusers' encode_prompt for one prompt (both tokenizers: max_length 77 padding/truncation, no
// syntax); diffusers_clip_skip k (0 = none) -> hidden_states[-(k+2)]. -> context [1, 77, C], pooled [1, proj].
// Note diffusers encodes the negative prompt with hidden_states[-2] whatever clip_skip is: pass 0 there.
SDXLConditioning encode_diffusers_sdxl(const SDXLTextEncoders& enc, const std::string& prompt,
                                       int diffusers_clip_skip = 0);

// diffusers _get_add_time_ids: base [orig_h, orig_w, crop_top, crop_left, target_h, target_w].
std::vector<float> sdxl_time_ids(int orig_h, int orig_w, int crop_top, int crop_left, int target_h, int target_w);
// Refiner (requires_aesthetics_score): [orig_h, orig_w, crop_top, crop_left, aesthetic_score].
std::vector<float> sdxl_refiner_time_ids(int orig_h, int orig_w, int crop_top, int crop_left, float aesthetic_score);

}  // namespace easel
