// SDXL base and refiner checkpoints: the sgm single file and the diffusers folder of the same tiny
// models (tests/fixtures/sdxl, tools/fixtures/sdxl.py) must give the same config and bit-identical
// tensors under the same names; detection from shapes; overrides; `easel info`; clear errors for
// truncated or inconsistent SDXL files.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "common.h"
#include "io/checkpoint.h"
#include "io/detect.h"
#include "io/keys_ldm.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using namespace easel;
using test::error_of;
using test::ramp;
using test::temp_dir;

namespace {

// EASEL_SDXL_FIXTURES overrides the folder (to run against freshly generated files).
std::string sdxl(const std::string& rel) {
  const char* env = std::getenv("EASEL_SDXL_FIXTURES");
  return (env && *env ? std::string(env) : test::fixture("sdxl")) + "/" + rel;
}
const std::string kBaseFolder = "diffusers", kBaseFile = "sdxl_ldm.safetensors";
const std::string kRefinerFolder = "refiner", kRefinerFile = "sdxl_refiner_ldm.safetensors";

// Same key set, shapes, dtypes and bytes.
void expect_same_tensors(const WeightStore& a, const WeightStore& b, const std::string& part) {
  std::vector<std::string> ka, kb;
  for (auto& [k, t] : a.tensors) ka.push_back(k);
  for (auto& [k, t] : b.tensors) kb.push_back(k);
  ASSERT_EQ(ka, kb) << part << ": key sets differ";
  ASSERT_FALSE(ka.empty()) << part << " is empty";
  for (auto& [k, t] : a.tensors) {
    const Tensor& u = b.tensors.at(k);
    ASSERT_EQ(t.shape(), u.shape()) << part << " " << k;
    // Values are exact in both files (the fixtures' weights are f16-representable); compare as f32
    // since a part may be stored f16 in one file and f32 in the other.
    ASSERT_EQ(t.to_vector(), u.to_vector()) << part << " " << k << " differs";
  }
}

void expect_same_text(const TextEncoderConfig& t, const TextEncoderConfig& s, const std::string& which) {
  SCOPED_TRACE(which);
  EXPECT_EQ(t.vocab_size, s.vocab_size);
  EXPECT_EQ(t.hidden_size, s.hidden_size);
  EXPECT_EQ(t.intermediate_size, s.intermediate_size);
  EXPECT_EQ(t.num_hidden_layers, s.num_hidden_layers);
  EXPECT_EQ(t.num_attention_heads, s.num_attention_heads);
  EXPECT_EQ(t.max_position_embeddings, s.max_position_embeddings);
  EXPECT_EQ(t.hidden_act, s.hidden_act);
  EXPECT_FLOAT_EQ(t.layer_norm_eps, s.layer_norm_eps);
  EXPECT_EQ(t.projection_dim, s.projection_dim);
}

// Everything but the sizes a single file cannot know (UNet sample_size, VAE tile size).
void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.pad_token_id_2, b.pad_token_id_2);
  if (a.has_text_1()) {
    EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  }
  EXPECT_EQ(a.force_zeros_for_empty_prompt, b.force_zeros_for_empty_prompt);
  EXPECT_EQ(a.requires_aesthetics_score, b.requires_aesthetics_score);
  const UNetConfig &u = a.unet, &v = b.unet;
  EXPECT_EQ(u.in_channels, v.in_channels);
  EXPECT_EQ(u.out_channels, v.out_channels);
  EXPECT_EQ(u.block_out_channels, v.block_out_channels);
  EXPECT_EQ(u.down_block_types, v.down_block_types);
  EXPECT_EQ(u.up_block_types, v.up_block_types);
  EXPECT_EQ(u.layers_per_block, v.layers_per_block);
  const size_t n = u.block_out_channels.size();
  for (size_t i = 0; i < n; i++) {
    // Levels without attention have no heads or depth in a file (diffusers' config repeats a value there).
    const bool attn = u.down_block_types[i] != "DownBlock2D" || i == n - 1;  // the last level: the mid block
    if (!attn) continue;
    EXPECT_EQ(u.heads_at(i), v.heads_at(i)) << "level " << i;
    EXPECT_EQ(u.transformer_layers_per_block[i], v.transformer_layers_per_block[i]) << "level " << i;
  }
  EXPECT_EQ(u.cross_attention_dim, v.cross_attention_dim);
  EXPECT_EQ(u.use_linear_projection, v.use_linear_projection);
  EXPECT_EQ(u.norm_num_groups, v.norm_num_groups);
  EXPECT_EQ(u.flip_sin_to_cos, v.flip_sin_to_cos);
  EXPECT_EQ(u.freq_shift, v.freq_shift);
  EXPECT_EQ(u.addition_embed_type, v.addition_embed_type);
  EXPECT_EQ(u.addition_time_embed_dim, v.addition_time_embed_dim);
  EXPECT_EQ(u.projection_class_embeddings_input_dim, v.projection_class_embeddings_input_dim);
  EXPECT_EQ(a.vae.block_out_channels, b.vae.block_out_channels);
  EXPECT_EQ(a.vae.layers_per_block, b.vae.layers_per_block);
  EXPECT_EQ(a.vae.latent_channels, b.vae.latent_channels);
  EXPECT_FLOAT_EQ(a.vae.scaling_factor, b.vae.scaling_factor);
  if (a.has_text_1()) expect_same_text(a.text, b.text, "text");
  expect_same_text(a.text_2, b.text_2, "text_2");
  const SchedulerConfig &p = a.scheduler, &q = b.scheduler;
  EXPECT_EQ(p.prediction_type, q.prediction_type);
  EXPECT_EQ(p.num_train_timesteps, q.num_train_timesteps);
  EXPECT_FLOAT_EQ(p.beta_start, q.beta_start);
  EXPECT_FLOAT_EQ(p.beta_end, q.beta_end);
  EXPECT_EQ(p.beta_schedule, q.beta_schedule);
  EXPECT_EQ(p.timestep_spacing, q.timestep_spacing);
  EXPECT_EQ(p.steps_offset, q.steps_offset);
  EXPECT_EQ(p.interpolation_type, q.interpolation_type);
  EXPECT_EQ(p.use_karras_sigmas, q.use_karras_sigmas);
}

// The LDM file's tensors, as a map to edit and write back.
std::map<std::string, Tensor> file_tensors(const std::string& path) {
  WeightStore w = load_weights(path);
  return std::map<std::string, Tensor>(w.tensors.begin(), w.tensors.end());
}

}  // namespace

// ---------- base ----------

TEST(SdxlCheckpoint, BaseSingleFileMatchesFolder) {
  Checkpoint f = open_checkpoint(sdxl(kBaseFolder));
  Checkpoint s = open_checkpoint(sdxl(kBaseFile));
  const ModelConfig& c = s.config;
  EXPECT_EQ(c.family, "sdxl");
  expect_same_config(c, f.config);
  // The tiny base of the contract.
  EXPECT_EQ(c.unet.block_out_channels, (std::vector<int>{32, 64, 64}));
  EXPECT_EQ(c.unet.down_block_types, (std::vector<std::string>{"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"}));
  EXPECT_EQ(c.unet.heads_at(1), 1);
  EXPECT_EQ(c.unet.heads_at(2), 1);  // 64-dim heads (more than one: test_checkpoint's real SD2.1 layout)
  EXPECT_EQ(c.unet.transformer_layers_per_block[1], 1);
  EXPECT_EQ(c.unet.transformer_layers_per_block[2], 2);
  EXPECT_TRUE(c.unet.use_linear_projection);
  EXPECT_EQ(c.unet.cross_attention_dim, 128);  // 64 (CLIP-L) + 64 (bigG)
  EXPECT_EQ(c.unet.addition_embed_type, "text_time");
  EXPECT_EQ(c.unet.addition_time_embed_dim, 8);
  EXPECT_EQ(c.unet.projection_class_embeddings_input_dim, 80);  // 32 + 6 * 8
  EXPECT_EQ(c.text.hidden_act, "quick_gelu");
  EXPECT_EQ(c.text.projection_dim, 0);
  EXPECT_EQ(c.text_2.hidden_act, "gelu");
  EXPECT_EQ(c.text_2.projection_dim, 32);
  EXPECT_EQ(c.text_2.num_hidden_layers, 3);  // every bigG layer is kept
  EXPECT_EQ(c.pad_token_id, 49407);
  EXPECT_EQ(c.pad_token_id_2, 0);
  EXPECT_TRUE(c.force_zeros_for_empty_prompt);
  EXPECT_FALSE(c.requires_aesthetics_score);
  EXPECT_FLOAT_EQ(c.vae.scaling_factor, 0.13025f);
  EXPECT_EQ(c.scheduler.timestep_spacing, "leading");
  EXPECT_EQ(c.scheduler.steps_offset, 1);
  EXPECT_EQ(c.scheduler.prediction_type, "epsilon");
  // A single file gets SDXL's native 1024 px and VAE tile size; the folder its config.json values.
  EXPECT_EQ(c.unet.sample_size, 128);
  EXPECT_EQ(c.vae.sample_size, 1024);
  EXPECT_EQ(f.config.unet.sample_size, 8);
  EXPECT_EQ(f.config.vae.sample_size, 64);
  EXPECT_TRUE(s.unknown_keys.empty()) << s.unknown_keys.size() << " unknown, first: " << s.unknown_keys[0];
  EXPECT_EQ(s.tokenizer_dir, "");
  EXPECT_EQ(s.tokenizer_2_dir, "");
  EXPECT_EQ(f.tokenizer_dir, sdxl(kBaseFolder) + "/tokenizer");
  EXPECT_EQ(f.tokenizer_2_dir, sdxl(kBaseFolder) + "/tokenizer_2");

  expect_same_tensors(s.unet, f.unet, "unet");
  expect_same_tensors(s.vae, f.vae, "vae");
  expect_same_tensors(s.text_encoder, f.text_encoder, "text_encoder");
  expect_same_tensors(s.text_encoder_2, f.text_encoder_2, "text_encoder_2");
  EXPECT_EQ(s.unet.get("add_embedding.linear_1.weight").shape(), (Shape{128, 80}));  // [time_embed_dim, in]
  EXPECT_EQ(s.unet.get("add_embedding.linear_2.weight").shape(), (Shape{128, 128}));
  EXPECT_EQ(s.text_encoder_2.get("text_projection.weight").shape(), (Shape{32, 64}));  // [proj, C]
  EXPECT_TRUE(s.text_encoder_2.has("encoder.layers.2.mlp.fc2.bias"));
}

TEST(SdxlCheckpoint, BigGProjectionIsTransposed) {
  // diffusers' convert_open_clip_checkpoint: text_projection.weight = checkpoint[text_projection].T
  WeightStore raw = load_weights(sdxl(kBaseFile));
  const Tensor& p = raw.get("conditioner.embedders.1.model.text_projection");  // [C, proj], x @ P
  ASSERT_EQ(p.shape(), (Shape{64, 32}));
  Checkpoint s = open_checkpoint(sdxl(kBaseFile));
  const Tensor& w = s.text_encoder_2.get("text_projection.weight");  // [proj, C]
  ASSERT_EQ(w.shape(), (Shape{32, 64}));
  EXPECT_EQ(w.dtype(), p.dtype());
  const auto pv = p.to_vector(), wv = w.to_vector();
  bool nonzero = false;
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 32; j++) {
      ASSERT_EQ(wv[j * 64 + i], pv[i * 32 + j]) << i << "," << j;
      nonzero = nonzero || pv[i * 32 + j] != 0.0f;
    }
  EXPECT_TRUE(nonzero);
}

// ---------- refiner ----------

TEST(SdxlCheckpoint, RefinerSingleFileMatchesFolder) {
  Checkpoint f = open_checkpoint(sdxl(kRefinerFolder));
  Checkpoint s = open_checkpoint(sdxl(kRefinerFile));
  const ModelConfig& c = s.config;
  EXPECT_EQ(c.family, "sdxl_refiner");
  EXPECT_FALSE(c.has_text_1());
  expect_same_config(c, f.config);
  EXPECT_EQ(c.unet.block_out_channels, (std::vector<int>{32, 64, 64, 64}));
  EXPECT_EQ(c.unet.down_block_types,
            (std::vector<std::string>{"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}));
  // Depth (1, 1, 1, 2): level 3 has no attention, its depth is the mid block's.
  for (int i = 1; i < 3; i++) EXPECT_EQ(c.unet.transformer_layers_per_block[i], 1) << i;
  EXPECT_EQ(c.unet.transformer_layers_per_block[3], 2);
  EXPECT_EQ(c.unet.cross_attention_dim, 64);  // bigG only
  EXPECT_EQ(c.unet.addition_time_embed_dim, 8);
  EXPECT_EQ(c.unet.projection_class_embeddings_input_dim, 72);  // 32 + 5 * 8
  EXPECT_EQ(c.text_2.projection_dim, 32);
  EXPECT_FALSE(c.force_zeros_for_empty_prompt);
  EXPECT_TRUE(c.requires_aesthetics_score);
  EXPECT_EQ(c.pad_token_id_2, 0);
  EXPECT_FLOAT_EQ(c.vae.scaling_factor, 0.13025f);
  EXPECT_EQ(c.scheduler.timestep_spacing, "leading");
  EXPECT_TRUE(s.unknown_keys.empty()) << s.unknown_keys.size() << " unknown, first: " << s.unknown_keys[0];
  EXPECT_TRUE(s.text_encoder.tensors.empty());
  EXPECT_TRUE(f.text_encoder.tensors.empty());
  EXPECT_EQ(f.tokenizer_dir, "");
  EXPECT_EQ(f.tokenizer_2_dir, sdxl(kRefinerFolder) + "/tokenizer_2");
  expect_same_tensors(s.unet, f.unet, "unet");
  expect_same_tensors(s.vae, f.vae, "vae");
  expect_same_tensors(s.text_encoder_2, f.text_encoder_2, "text_encoder_2");
}

// ---------- detection on synthetic stores ----------

TEST(SdxlDetect, FamilyFromTextEncoders) {
  auto store = [](std::vector<std::string> keys) {
    WeightStore w;
    w.source = "x.safetensors";
    w.tensors["model.diffusion_model.input_blocks.0.0.weight"] = ramp({4}, 1.0f);
    for (auto& k : keys) w.tensors[k] = ramp({4}, 2.0f);
    return w;
  };
  const std::string l = "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight";
  const std::string g1 = "conditioner.embedders.1.model.ln_final.weight";
  const std::string g0 = "conditioner.embedders.0.model.ln_final.weight";
  EXPECT_EQ(detect::family_from_ldm(store({l, g1})), "sdxl");
  EXPECT_EQ(detect::family_from_ldm(store({g0})), "sdxl_refiner");
  EXPECT_ERROR(detect::family_from_ldm(store({l})), "SDXL checkpoint (conditioner.embedders.*) with an unexpected set");
  EXPECT_ERROR(detect::family_from_ldm(store({g1})), "conditioner.embedders.1.model.*); expected");
  EXPECT_ERROR(detect::family_from_ldm(store({g0, g1})), "unexpected set of text encoders");
  EXPECT_ERROR(detect::family_from_ldm(store({l, g1, "cond_stage_model.model.ln_final.weight"})),
               "both conditioner.embedders.* (SDXL) and cond_stage_model.* (SD1/SD2)");
  WeightStore te_only;
  te_only.source = "te.safetensors";
  te_only.tensors[g1] = ramp({4}, 1.0f);
  EXPECT_ERROR(detect::family_from_ldm(te_only), "no UNet weights found (model.diffusion_model.*) (it has SDXL text encoders");
  // SDXL scheduler defaults (stabilityai's scheduler_config.json: Euler, leading, steps_offset 1).
  SchedulerConfig sc = detect::default_scheduler("sdxl_refiner", "epsilon");
  EXPECT_EQ(sc.timestep_spacing, "leading");
  EXPECT_EQ(sc.steps_offset, 1);
  EXPECT_EQ(sc.beta_schedule, "scaled_linear");
  EXPECT_EQ(detect::sdxl_time_ids("sdxl"), 6);
  EXPECT_EQ(detect::sdxl_time_ids("sdxl_refiner"), 5);
}

TEST(SdxlDetect, UNetTableMapsLabelEmbOnlyForTextTime) {
  UNetConfig c;  // SD1.5 layout
  auto has = [](const std::vector<keys::PrefixMap>& t, const std::string& from, const std::string& to) {
    for (auto& e : t)
      if (e.from == from) return e.to == to;
    return false;
  };
  EXPECT_FALSE(has(keys::ldm_unet_table(c), "label_emb.0.0.", "add_embedding.linear_1."));
  c.addition_embed_type = "text_time";
  const auto t = keys::ldm_unet_table(c);
  EXPECT_TRUE(has(t, "label_emb.0.0.", "add_embedding.linear_1."));
  EXPECT_TRUE(has(t, "label_emb.0.2.", "add_embedding.linear_2."));
  EXPECT_FALSE(has(t, "label_emb.0.1.", "add_embedding.act."));  // SiLU: no weights
}

TEST(SdxlDetect, AddedConditioningSplitsExactly) {
  WeightStore u;
  u.source = "u";
  u.tensors["time_embed.0.weight"] = Tensor::zeros({1280, 320});
  u.tensors["label_emb.0.0.weight"] = Tensor::zeros({1280, 2816});
  u.tensors["label_emb.0.2.weight"] = Tensor::zeros({1280, 1280});
  UNetConfig c;
  detect::sdxl_added_conditioning(c, u, "sdxl", 1280);  // real base: 1280 + 6 * 256
  EXPECT_EQ(c.addition_embed_type, "text_time");
  EXPECT_EQ(c.addition_time_embed_dim, 256);
  EXPECT_EQ(c.projection_class_embeddings_input_dim, 2816);
  EXPECT_ERROR(detect::sdxl_added_conditioning(c, u, "sdxl_refiner", 1280), "inconsistent pooled dims");
  u.tensors["label_emb.0.0.weight"] = Tensor::zeros({1280, 2560});  // real refiner: 1280 + 5 * 256
  detect::sdxl_added_conditioning(c, u, "sdxl_refiner", 1280);
  EXPECT_EQ(c.addition_time_embed_dim, 256);
  EXPECT_ERROR(detect::sdxl_added_conditioning(c, u, "sdxl", 1280), "inconsistent pooled dims");
  u.tensors["label_emb.0.2.weight"] = Tensor::zeros({1280, 640});
  EXPECT_ERROR(detect::sdxl_added_conditioning(c, u, "sdxl_refiner", 1280), "do not fit the time embedding");
  u.tensors.erase("label_emb.0.2.weight");
  EXPECT_ERROR(detect::sdxl_added_conditioning(c, u, "sdxl_refiner", 1280),
               "tensor 'model.diffusion_model.label_emb.0.2.weight' is missing");
}

// ---------- overrides and describe ----------

TEST(SdxlCheckpoint, Overrides) {
  CheckpointOverrides ov;
  ov.family = "sd1";
  EXPECT_ERROR(open_checkpoint(sdxl(kBaseFile), ov),
               "family override 'sd1' does not match this checkpoint, which is sdxl (SDXL base: CLIP-L + OpenCLIP bigG");
  ov.family = "sd2";
  EXPECT_ERROR(open_checkpoint(sdxl(kBaseFolder), ov), "which is sdxl (SDXL base: StableDiffusionXL pipeline");
  ov.family = "sdxl_refiner";
  EXPECT_ERROR(open_checkpoint(sdxl(kBaseFile), ov), "family override 'sdxl_refiner' does not match this checkpoint, which is sdxl");
  ov.family = "sdxl";
  EXPECT_EQ(open_checkpoint(sdxl(kBaseFile), ov).config.family, "sdxl");
  EXPECT_ERROR(open_checkpoint(sdxl(kRefinerFile), ov), "which is sdxl_refiner (SDXL refiner: OpenCLIP bigG text encoder only");
  ov.family = "sdxl_refiner";
  EXPECT_EQ(open_checkpoint(sdxl(kRefinerFolder), ov).config.family, "sdxl_refiner");
  CheckpointOverrides skip;
  skip.clip_skip = 3;  // both tiny encoders have 3 layers
  EXPECT_NO_THROW(open_checkpoint(sdxl(kBaseFile), skip));
  EXPECT_NO_THROW(open_checkpoint(sdxl(kRefinerFile), skip));
  skip.clip_skip = 4;
  EXPECT_ERROR(open_checkpoint(sdxl(kBaseFile), skip), "clip_skip 4 is out of range (0..3: the shallower of the two text encoders");
  EXPECT_ERROR(open_checkpoint(sdxl(kRefinerFolder), skip), "clip_skip 4 is out of range (0..3: the text_encoder_2");
  CheckpointOverrides pred;
  pred.prediction_type = "v_prediction";  // SDXL v-prediction fine-tunes exist
  EXPECT_EQ(open_checkpoint(sdxl(kBaseFile), pred).config.scheduler.prediction_type, "v_prediction");
}

TEST(SdxlCheckpoint, Describe) {
  std::string b = describe_checkpoint(sdxl(kBaseFile));
  for (const char* want : {"format: single-file LDM checkpoint", "family: sdxl (SDXL base", "resolution: 1024x1024",
                           "  text_encoder: ", "  text_encoder_2: ", "tokenizer_2: built-in CLIP vocabulary",
                           "added conditioning: text_time, time embed dim 8, projection input 80 = pooled 32 + 6 time ids",
                           "force_zeros_for_empty_prompt true", "projection 32", "scaling_factor 0.13025",
                           "unknown keys: 0", "spacing leading"})
    EXPECT_NE(b.find(want), std::string::npos) << want << "\n" << b;
  std::string r = describe_checkpoint(sdxl(kRefinerFolder));
  for (const char* want : {"format: diffusers folder", "family: sdxl_refiner (SDXL refiner", "  text_encoder_2: ",
                           "5 time ids x 8 (size, crop, aesthetic score)", "force_zeros_for_empty_prompt false"})
    EXPECT_NE(r.find(want), std::string::npos) << want << "\n" << r;
  EXPECT_EQ(r.find("  text_encoder: "), std::string::npos) << r;
  // The text encoders alone are described as such, not refused.
  WeightStore w = load_weights(sdxl(kRefinerFile));
  std::map<std::string, Tensor> te;
  for (auto& [k, t] : w.tensors)
    if (k.rfind("conditioner.", 0) == 0) te[k] = t;
  const std::string d = temp_dir("describe");
  save_safetensors(d + "/te.safetensors", te);
  std::string t = describe_checkpoint(d + "/te.safetensors");
  EXPECT_NE(t.find("kind: SDXL text encoders without a UNet"), std::string::npos) << t;
}

// ---------- truncated / inconsistent files ----------

TEST(SdxlCheckpointErrors, BrokenSingleFiles) {
  const std::string d = temp_dir("files");
  auto open_with = [&](const std::string& name, const std::string& src,
                       const std::function<void(std::map<std::string, Tensor>&)>& edit) {
    auto m = file_tensors(sdxl(src));
    edit(m);
    save_safetensors(d + "/" + name, m);
    return open_checkpoint(d + "/" + name);
  };
  EXPECT_ERROR(open_with("no_label_emb.safetensors", kBaseFile,
                         [](auto& m) {
                           m.erase("model.diffusion_model.label_emb.0.0.weight");
                           m.erase("model.diffusion_model.label_emb.0.0.bias");
                         }),
               "SDXL UNet without its added-conditioning embedding: tensor 'model.diffusion_model.label_emb.0.0.weight' is missing");
  {  // `easel info` still describes it, with the reason.
    std::string desc = describe_checkpoint(d + "/no_label_emb.safetensors");
    EXPECT_NE(desc.find("not loadable as a model: [checkpoint]"), std::string::npos) << desc;
    EXPECT_NE(desc.find("label_emb.0.0.weight' is missing"), std::string::npos) << desc;
  }
  {  // A file cut short (an interrupted download).
    const std::string cut = d + "/cut.safetensors";
    fs::copy_file(sdxl(kBaseFile), cut);
    fs::resize_file(cut, fs::file_size(cut) / 2);
    const std::string msg = error_of([&] { open_checkpoint(cut); });
    EXPECT_NE(msg.find("cut.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("past end of file"), std::string::npos) << msg;
  }
  EXPECT_ERROR(open_with("no_proj.safetensors", kBaseFile,
                         [](auto& m) { m.erase("conditioner.embedders.1.model.text_projection"); }),
               "OpenCLIP bigG text encoder has no text_projection");
  EXPECT_ERROR(open_with("no_proj_refiner.safetensors", kRefinerFile,
                         [](auto& m) { m.erase("conditioner.embedders.0.model.text_projection"); }),
               "(conditioner.embedders.0.model.*): the OpenCLIP bigG text encoder has no text_projection");
  // A projection to 31 dims: label_emb takes 80 = 31 + 49, and 49 is no multiple of 6.
  EXPECT_ERROR(open_with("pooled.safetensors", kBaseFile,
                         [](auto& m) { m["conditioner.embedders.1.model.text_projection"] = ramp({64, 31}, 0.5f); }),
               "inconsistent pooled dims: label_emb.0.0.weight takes 80 inputs, which is not the text encoder's pooled dim 31 + 6");
  // The refiner's UNet (72 = 32 + 5 * 8) behind base text encoders: 40 is no multiple of 6.
  EXPECT_ERROR(open_with("mixed.safetensors", kRefinerFile,
                         [&](auto& m) {
                           std::map<std::string, Tensor> out;
                           for (auto& [k, t] : m) {
                             const std::string p = "conditioner.embedders.0.model.";
                             out[k.rfind(p, 0) == 0 ? "conditioner.embedders.1.model." + k.substr(p.size()) : k] = t;
                           }
                           for (auto& [k, t] : file_tensors(sdxl(kBaseFile)))
                             if (k.rfind("conditioner.embedders.0.", 0) == 0) out[k] = t;
                           m = out;
                         }),
               "does not match the text encoders' hidden sizes (64 + 64 = 128)");
  // Truncated bigG: a resblock gap.
  EXPECT_ERROR(open_with("gap.safetensors", kBaseFile,
                         [](auto& m) {
                           for (auto it = m.begin(); it != m.end();)
                             it = it->first.rfind("conditioner.embedders.1.model.transformer.resblocks.1.", 0) == 0 ? m.erase(it)
                                                                                                                  : std::next(it);
                         }),
               "OpenCLIP resblocks are not numbered 0..1");
  // Keys of no part are listed, not fatal.
  Checkpoint ck = open_with("extra.safetensors", kBaseFile, [](auto& m) {
    m["conditioner.embedders.2.model.weight"] = ramp({2}, 1.0f);
    m["conditioner.embedders.1.model.transformer.resblocks.0.attn.bogus"] = ramp({2}, 1.0f);
    m["model_ema.num_updates"] = ramp({1}, 1.0f);  // training state: ignored
  });
  EXPECT_EQ(ck.unknown_keys, (std::vector<std::string>{"conditioner.embedders.1.model.transformer.resblocks.0.attn.bogus",
                                                       "conditioner.embedders.2.model.weight"}));
}

TEST(SdxlCheckpointErrors, BrokenFolders) {
  auto copy = [](const std::string& src, const std::string& name) {
    const std::string d = temp_dir(name);
    fs::copy(sdxl(src), d, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    return d;
  };
  auto patch_json = [](const std::string& path, const std::function<void(nlohmann::json&)>& f) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(path));
    f(j);
    std::ofstream(path) << j.dump(2);
  };
  {  // A base folder that claims the refiner's aesthetic score: 80 != 32 + 5 * 8.
    std::string d = copy(kBaseFolder, "aesthetic");
    patch_json(d + "/model_index.json", [](nlohmann::json& j) { j["requires_aesthetics_score"] = true; });
    EXPECT_ERROR(open_checkpoint(d), "inconsistent pooled dims: projection_class_embeddings_input_dim 80 != text_encoder_2 "
                                     "projection_dim 32 + 5 x addition_time_embed_dim 8");
  }
  {  // text_encoder_2 saved as CLIPTextModel (no projection).
    std::string d = copy(kRefinerFolder, "no_proj");
    const std::string f = d + "/text_encoder_2/model.safetensors";
    auto m = file_tensors(f);
    ASSERT_EQ(m.erase("text_projection.weight"), 1u);
    save_safetensors(f, m);
    EXPECT_ERROR(open_checkpoint(d), "text_encoder_2 weights have no 'text_projection.weight'");
  }
  {
    std::string d = copy(kBaseFolder, "proj_dim");
    patch_json(d + "/text_encoder_2/config.json", [](nlohmann::json& j) { j["projection_dim"] = 16; });
    EXPECT_ERROR(open_checkpoint(d), "text_projection.weight has shape [32, 64], expected [16, 64]");
  }
  {
    std::string d = copy(kBaseFolder, "no_te2");
    fs::remove_all(d + "/text_encoder_2");
    EXPECT_ERROR(open_checkpoint(d), "missing part folder 'text_encoder_2/'");
  }
  {
    std::string d = copy(kBaseFolder, "other_embed");
    patch_json(d + "/unet/config.json", [](nlohmann::json& j) { j["addition_embed_type"] = "image"; });
    EXPECT_ERROR(open_checkpoint(d), "field 'addition_embed_type' = 'image' is not supported");
  }
  {  // A refiner folder: [null, null] text_encoder, and no text_encoder/ folder is needed.
    std::string d = copy(kRefinerFolder, "refiner_index");
    patch_json(d + "/model_index.json", [](nlohmann::json& j) { j.erase("force_zeros_for_empty_prompt"); });
    Checkpoint ck = open_checkpoint(d);
    EXPECT_EQ(ck.config.family, "sdxl_refiner");
    EXPECT_TRUE(ck.config.force_zeros_for_empty_prompt);  // the pipeline's __init__ default
  }
}
