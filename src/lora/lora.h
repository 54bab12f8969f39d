// LoRA-family files (LoRA, LoCon + Tucker, LoHa, LoKr, DoRA, full diffs): reading every common
// key format and mapping it onto the modules of a loaded Checkpoint, and the weight delta of
// each module. Applying (merge/unmerge, bypass) builds on delta_weight() / delta_bias().
//   https://github.com/KohakuBlueleaf/LyCORIS/tree/main/lycoris/functional  (LoHa, LoKr, LoCon, DoRA)
//   https://github.com/huggingface/peft/blob/main/src/peft/tuners/lora/layer.py  (PEFT LoRA, DoRA)
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/loaders/lora_conversion_utils.py
//
// Key formats (file key -> Module.target + Module.module, an easel weight name without ".weight"):
//   kohya/A1111  lora_unet_<diffusers path, '.'->'_'>   (SD1/SD2; '_' resolved against the model)
//                lora_unet_<LDM path, '.'->'_'>         (SDXL: input_blocks_4_1_..., middle_block_1_...,
//                                                       output_blocks_..., time_embed_0, label_emb_0_0,
//                                                       through keys::ldm_unet_table + rename_suffix)
//                lora_te_ / lora_te1_ (TextEncoder), lora_te2_ (TextEncoder2); "text_model_" optional
//                params .lora_down.weight .lora_up.weight .lora_mid.weight .alpha .scale .dora_scale
//                       .hada_w1_a/_w1_b/_w2_a/_w2_b/_t1/_t2 .lokr_w1/_w1_a/_w1_b/_w2/_w2_a/_w2_b/_t2
//                       .diff .diff_b
//   PEFT/diffusers  unet.<module>.lora_A.weight / lora_B.weight (or lora.down/lora.up), .alpha,
//                   .lora_magnitude_vector (DoRA); text_encoder.[text_model.]<module>..., text_encoder_2...
//   old diffusers   [unet.]<block>.attn1.processor.to_q_lora.down.weight: to_q_lora -> to_q,
//                   to_out_lora -> to_out.0 (text encoder: q_proj/k_proj/v_proj/out_proj).
//
// Tensor names in Module.t (all converted to f32 at read time):
//   LoRA: "down" [r, in(, kh, kw)], "up" [out, r(, 1, 1)], optional "mid" [r, r, kh, kw] (Tucker; then
//         down is [r, in, 1, 1]).
//   LoHa: "hada_w1_a" [out, r], "hada_w1_b" [r, in*k], same for w2; Tucker: "hada_t1"/"hada_t2"
//         [r, r, kh, kw] with hada_w*_a [r, out], hada_w*_b [r, in].
//   LoKr: "lokr_w1" [a, c] or "lokr_w1_a" [a, r] @ "lokr_w1_b" [r, c]; "lokr_w2" [b, d(, kh, kw)] or
//         "lokr_w2_a" [b, r] @ "lokr_w2_b" [r, d*k], or Tucker "lokr_t2" [r, r, kh, kw] with
//         lokr_w2_a [r, b], lokr_w2_b [r, d]. out = a*b, in = c*d.
//   Full: "diff" (W's shape), optional "diff_b" (bias shape).
//   DoRA (any kind): "dora_scale" (LyCORIS/kohya: [out, 1, ...] norm per output row, or [1, in, ...]
//         norm per input column) or "magnitude" (PEFT lora_magnitude_vector [out]).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/keys_ldm.h"

namespace easel::lora {

enum class Target { UNet, TextEncoder, TextEncoder2 };  // TextEncoder: SD1/SD2's only encoder, SDXL's CLIP-L
enum class Kind { LoRA, LoHa, LoKr, Full };  // LoRA: kohya/PEFT/old diffusers/LoCon (+ Tucker mid)

const char* target_name(Target t);  // "unet" | "text_encoder" | "text_encoder_2"
const char* kind_name(Kind k);      // "lora" | "loha" | "lokr" | "full"

struct Module {
  Target target = Target::UNet;
  std::string module;  // easel weight name without ".weight": "down_blocks.0.attentions.0.proj_in"
  Kind kind = Kind::LoRA;
  std::map<std::string, Tensor> t;  // f32 factors, named as in the header comment
  float alpha = 0;   // file's alpha (0 when absent)
  int rank = 0;      // r (0 for Full and full-matrix LoKr)
  float scale = 1;   // per-unit-strength factor: file "scale" key, else alpha/rank, else 1 (no alpha)
  Shape shape;       // the model weight's shape (ΔW is returned in it)
  std::vector<std::string> keys;  // file keys consumed
  bool dora() const { return t.count("dora_scale") || t.count("magnitude"); }
};

struct LoraFile {
  std::string path;
  std::string format;      // "kohya" | "peft" | "diffusers_old" | "lycoris" (kohya names, LyCORIS algos) | mixed "a+b"
  std::string base_guess;  // "sd1" | "sd2" | "sdxl" | "" (from names and shapes)
  std::vector<Module> modules;
  std::vector<std::string> unmatched;  // file keys that land on no module, each "key (reason)"
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ (kohya ss_*)
  size_t n_keys = 0;  // keys in the file
};

// Reads `path` (safetensors or torch file) and maps every key onto a module of `ck` (names
// from its WeightStores), or lists it in `unmatched`. Throws easel::Error naming the file and
// key for: unreadable/truncated files, non-finite values, factor shapes that disagree with each
// other or with the model weight, a LoRA made for another base (SD1/SD2 vs SDXL), or a file
// in which no key matches the model.
LoraFile read_lora(const std::string& path, const Checkpoint& ck);

// ΔW at strength s (f32, m.shape), including scale (alpha/rank). For DoRA, W (the model weight,
// any float dtype) is needed and the result is W' - W; otherwise W may be undefined.
//   LoRA: s·scale·up@down; Tucker: s·scale·Σ up[o,i] mid[i,j,..] down[j,c]
//   LoHa: s·scale·(w1a@w1b)⊙(w2a@w2b)   LoKr: s·scale·kron(w1, w2)   Full: s·diff
//   DoRA dora_scale (LyCORIS): V = W + scale·ΔW0 (strength 1), n = ‖V‖ + finfo(f32).eps over the
//        axis dora_scale's shape names ([out,1,..]: per row, [1,in,..]: per input column);
//        LyCORIS (module forward): W' = V·(s·(g/n - 1) + 1)   -- s = 0 gives V, not W;
//        Lerp (ComfyUI / lycoris functional apply_dora_scale): W' = W + s·(g·V/n - W).
//   DoRA magnitude (PEFT): V = W + s·scale·ΔW0, W' = magnitude·V/‖V‖_row (no eps).
enum class DoraStrength { LyCORIS, Lerp };
Tensor delta_weight(const Module& m, const Tensor& W, float strength,
                    DoraStrength dora = DoraStrength::LyCORIS);
// acc += ΔW (acc f32 with m.shape's numel) by one GEMM with beta = 1, for plain LoRA (no Tucker mid,
// no DoRA); false (acc untouched) for every other module.
bool accumulate_delta(const Module& m, float strength, Tensor& acc);
// Δb at strength s for Full modules with diff_b; undefined Tensor otherwise.
Tensor delta_bias(const Module& m, float strength);

// Text for `easel info` on a LoRA file (format, kinds, ranks, alphas, targets, ss_* metadata).
// Reads only the file (no model needed).
std::string describe_lora(const std::string& path);

namespace detail {  // lora_keys.cpp
// Splits a file key into module prefix and parameter ("lora_down", "alpha", "hada_w1_a", ...,
// "lora_A" -> "down", "lora_B" -> "up", old "to_q_lora.down" -> prefix "...to_q", "down").
// False when the key has no known parameter suffix.
bool split_key(const std::string& key, std::string& prefix, std::string& param);

// Resolves module prefixes of one model to easel module names.
class Resolver {
 public:
  explicit Resolver(const Checkpoint& ck);
  // Target + module name for a file prefix; false with `why` set when it names no module.
  bool resolve(const std::string& prefix, Target& target, std::string& module, std::string& why,
               std::string& format) const;
  const WeightStore* store(Target t) const;

 private:
  const Checkpoint& ck_;
  std::map<std::string, std::string> unet_flat_, te_flat_, te2_flat_;  // '.'->'_' name -> module
  std::vector<keys::PrefixMap> ldm_;  // LDM -> diffusers UNet table, with flattened "from"
  bool kohya_unet(const std::string& rest, std::string& module) const;
};
}  // namespace detail

}  // namespace easel::lora
