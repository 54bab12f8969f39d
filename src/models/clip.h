// CLIP text transformer (transformers' CLIPTextModel; OpenCLIP's text tower after key renaming).
//   https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py
//   Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
// Keys as transformers 5 saves them (no "text_model." level; a "text_model." prefix is accepted):
//   embeddings.token_embedding.weight [V, C], embeddings.position_embedding.weight [P, C],
//   encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}.{weight,bias},
//   final_layer_norm.{weight,bias}; optional text_projection.weight [proj, C] (CLIPTextModelWithProjection).
// Weights may stay f16/bf16 in the store; ops convert. Pre-LN blocks, causal self-attention.
#pragma once
#include <vector>

#include "io/weights.h"
#include "models/config.h"
#include "models/nn.h"

namespace easel {

struct CLIPEncoderLayer {
  nn::LayerNorm layer_norm1, layer_norm2;  // [C]
  struct {
    nn::Linear q_proj, k_proj, v_proj, out_proj;  // [C, C]
  } self_attn;
  struct {
    nn::Linear fc1;  // [I, C]
    nn::Linear fc2;  // [C, I]
  } mlp;
  // x [B, L, C] -> [B, L, C]
  Tensor forward(const Tensor& x, int heads, bool quick_gelu) const;
};

struct CLIPTextModel {
  TextEncoderConfig config;
  struct {
    Tensor token_embedding;     // [V, C]  (embeddings.token_embedding.weight)
    Tensor position_embedding;  // [P, C]  (embeddings.position_embedding.weight)
  } embeddings;
  std::vector<CLIPEncoderLayer> layers;  // encoder.layers.N
  nn::LayerNorm final_layer_norm;
  Tensor text_projection;  // [proj, C] (text_projection.weight) or undefined

  void load(const WeightStore& w, const TextEncoderConfig& cfg);

  // ids [B, L] (i64 or i32, L <= max_position_embeddings) -> [B, L, C], always after final_layer_norm.
  // clip_skip follows A1111: 1 = last layer (transformers' last_hidden_state), 2 = penultimate layer's
  // output through final_layer_norm ("Clip skip: 2"; diffusers' clip_skip=1), ... Layers past the
  // skipped point are not run.
  Tensor forward(const Tensor& ids, int clip_skip = 1) const;

  // transformers' hidden_states tuple: [0] = embeddings, [i] = output of layer i (before the final
  // norm). Only layers 1..n_layers are run (n_layers < 0: all).
  std::vector<Tensor> hidden_states(const Tensor& ids, int n_layers = -1) const;

  // SDXL in one pass: hidden_states[-(skip+1)] without final_layer_norm -> [B, L, C] (skip >= 1;
  // 1 = penultimate) and, when `projected` is given, project(pooled(final_layer_norm(last layer), ids,
  // eos_id)) -> [B, proj] (transformers' CLIPTextModelWithProjection text_embeds).
  Tensor hidden_layer(const Tensor& ids, int skip, Tensor* projected = nullptr, int eos_id = 49407) const;

  // pooler_output: hidden [B, L, C] at each row's first eos_id in ids (argmax id when absent) -> [B, C].
  static Tensor pooled(const Tensor& hidden, const Tensor& ids, int eos_id = 49407);
  // pooled [B, C] @ text_projection^T -> [B, proj] (needs text_projection).
  Tensor project(const Tensor& pooled) const;
};

}  // namespace easel
