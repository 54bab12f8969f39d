// Checkpoint opening: LDM/OpenCLIP key tables, detection from shapes, diffusers folders,
// overrides, describe, and clear errors for bad inputs.
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "io/checkpoint.h"
#include "io/detect.h"
#include "io/diffusers_folder.h"
#include "io/keys_ldm.h"
#include "io/keys_openclip.h"

namespace fs = std::filesystem;
using namespace easel;
using easel::test::error_of;
using easel::test::fixture;
using easel::test::ramp;
using easel::test::temp_dir;

namespace {

// Minimal safetensors writer for crafted inputs (F32/F16/I64 tensors + metadata).
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t off = 0;
  for (auto& [k, t] : tensors) {
    const char* dt = t.dtype() == DType::F32 ? "F32" : t.dtype() == DType::F16 ? "F16" : "I64";
    h[k] = {{"dtype", dt}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string header = h.dump();
  while (header.size() % 8) header += ' ';
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header.size();
  f.write((const char*)&n, 8);
  f.write(header.data(), header.size());
  for (auto& [k, t] : tensors) f.write((const char*)t.raw(), t.nbytes());
}

std::map<std::string, std::string> table_map(const std::vector<keys::PrefixMap>& t) {
  std::map<std::string, std::string> m;
  for (auto& e : t) {
    EXPECT_TRUE(m.emplace(e.from, e.to).second) << "duplicate LDM prefix " << e.from;
  }
  return m;
}

UNetConfig sd15_unet() { return UNetConfig{}; }  // the defaults are SD1.5's

void expect_same_values(const WeightStore& a, const WeightStore& b, const std::string& part) {
  std::vector<std::string> ka, kb;
  for (auto& [k, t] : a.tensors) ka.push_back(k);
  for (auto& [k, t] : b.tensors) kb.push_back(k);
  ASSERT_EQ(ka, kb) << part << ": key sets differ";
  for (auto& [k, t] : a.tensors) {
    const Tensor& u = b.tensors.at(k);
    ASSERT_EQ(t.shape(), u.shape()) << part << " " << k;
    // Values are stored exactly in both files (the fixture's F16 tensors are lossless copies).
    ASSERT_EQ(t.to_vector(), u.to_vector()) << part << " " << k << " differs";
  }
}

}  // namespace

// ---------- key tables (no fixtures needed) ----------

TEST(KeysLdm, UNetTableMatchesDiffusersIndexArithmetic) {
  auto m = table_map(keys::ldm_unet_table(sd15_unet()));
  // convert_ldm_unet_checkpoint with layers_per_block 2: block_id = (i-1)/3, layer = (i-1)%3.
  EXPECT_EQ(m.at("input_blocks.0.0."), "conv_in.");
  EXPECT_EQ(m.at("input_blocks.1.0."), "down_blocks.0.resnets.0.");
  EXPECT_EQ(m.at("input_blocks.2.1."), "down_blocks.0.attentions.1.");
  EXPECT_EQ(m.at("input_blocks.3.0.op."), "down_blocks.0.downsamplers.0.conv.");
  EXPECT_EQ(m.at("input_blocks.4.1."), "down_blocks.1.attentions.0.");
  EXPECT_EQ(m.at("input_blocks.9.0.op."), "down_blocks.2.downsamplers.0.conv.");
  EXPECT_EQ(m.at("input_blocks.11.0."), "down_blocks.3.resnets.1.");
  EXPECT_EQ(m.count("input_blocks.10.1."), 0u);  // DownBlock2D: no attention
  EXPECT_EQ(m.count("input_blocks.12.0.op."), 0u);
  EXPECT_EQ(m.at("middle_block.0."), "mid_block.resnets.0.");
  EXPECT_EQ(m.at("middle_block.1."), "mid_block.attentions.0.");
  EXPECT_EQ(m.at("middle_block.2."), "mid_block.resnets.1.");
  // Up: block_id = i/3, layer = i%3; upsampler at .1 after UpBlock2D, .2 after an attention.
  EXPECT_EQ(m.at("output_blocks.0.0."), "up_blocks.0.resnets.0.");
  EXPECT_EQ(m.count("output_blocks.0.1."), 0u);
  EXPECT_EQ(m.at("output_blocks.2.1.conv."), "up_blocks.0.upsamplers.0.conv.");
  EXPECT_EQ(m.at("output_blocks.5.1."), "up_blocks.1.attentions.2.");
  EXPECT_EQ(m.at("output_blocks.5.2.conv."), "up_blocks.1.upsamplers.0.conv.");
  EXPECT_EQ(m.at("output_blocks.8.2.conv."), "up_blocks.2.upsamplers.0.conv.");
  EXPECT_EQ(m.at("output_blocks.11.1."), "up_blocks.3.attentions.2.");
  EXPECT_EQ(m.count("output_blocks.11.2.conv."), 0u);
  EXPECT_EQ(m.at("out.2."), "conv_out.");
  EXPECT_EQ(m.at("time_embed.2."), "time_embedding.linear_2.");
  // Every diffusers prefix is produced once.
  std::set<std::string> to;
  for (auto& [f, t] : m) EXPECT_TRUE(to.insert(t).second) << "duplicate diffusers prefix " << t;
}

TEST(KeysLdm, ResnetAndAttentionSuffixRules) {
  using keys::Rule;
  EXPECT_EQ(keys::rename_suffix(Rule::UNetResnet, "in_layers.0.weight"), "norm1.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetResnet, "in_layers.2.bias"), "conv1.bias");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetResnet, "emb_layers.1.weight"), "time_emb_proj.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetResnet, "out_layers.3.weight"), "conv2.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetResnet, "skip_connection.bias"), "conv_shortcut.bias");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetResnet, "in_layers.1.weight"), "");  // SiLU has no weight
  EXPECT_EQ(keys::rename_suffix(Rule::VAEResnet, "nin_shortcut.weight"), "conv_shortcut.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::VAEAttention, "proj_out.bias"), "to_out.0.bias");
  EXPECT_EQ(keys::rename_suffix(Rule::VAEAttention, "norm.weight"), "group_norm.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::VAEAttention, "q.weight"), "to_q.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::VAEAttention, "q.scale"), "");
  EXPECT_EQ(keys::rename_suffix(Rule::Same, "bias"), "bias");
  EXPECT_EQ(keys::rename_suffix(Rule::Same, "running_mean"), "");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetAttention, "transformer_blocks.0.attn2.to_k.weight"),
            "transformer_blocks.0.attn2.to_k.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetAttention, "transformer_blocks.1.ff.net.0.proj.bias"),
            "transformer_blocks.1.ff.net.0.proj.bias");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetAttention, "proj_in.weight"), "proj_in.weight");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetAttention, "transformer_blocks.x.norm1.weight"), "");
  EXPECT_EQ(keys::rename_suffix(Rule::UNetAttention, "transformer_blocks.0.attn1.to_q.lora_down.weight"), "");
  EXPECT_TRUE(keys::is_clip_text_key("encoder.layers.11.mlp.fc2.bias"));
  EXPECT_TRUE(keys::is_clip_text_key("embeddings.position_embedding.weight"));
  EXPECT_FALSE(keys::is_clip_text_key("encoder.layers.1.mlp.fc3.bias"));
  EXPECT_FALSE(keys::is_clip_text_key("text_projection.weight"));
}

TEST(KeysLdm, VAETableReversesDecoderLevels) {
  VAEConfig c;  // SD VAE: 4 levels, 2 layers
  auto m = table_map(keys::ldm_vae_table(c));
  EXPECT_EQ(m.at("decoder.up.3.block.0."), "decoder.up_blocks.0.resnets.0.");
  EXPECT_EQ(m.at("decoder.up.0.block.2."), "decoder.up_blocks.3.resnets.2.");
  EXPECT_EQ(m.at("decoder.up.3.upsample.conv."), "decoder.up_blocks.0.upsamplers.0.conv.");
  EXPECT_EQ(m.count("decoder.up.0.upsample.conv."), 0u);
  EXPECT_EQ(m.at("encoder.down.2.downsample.conv."), "encoder.down_blocks.2.downsamplers.0.conv.");
  EXPECT_EQ(m.count("encoder.down.3.downsample.conv."), 0u);
  EXPECT_EQ(m.at("encoder.norm_out."), "encoder.conv_norm_out.");
  EXPECT_EQ(m.at("decoder.mid.attn_1."), "decoder.mid_block.attentions.0.");
}

TEST(KeysLdm, ApplyTableSharesTensorsReshapesVAEAttentionAndReportsUnknown) {
  VAEConfig c;
  c.block_out_channels = {32, 64};
  c.layers_per_block = 1;
  WeightStore w;
  w.source = "synthetic";
  w.tensors["encoder.mid.attn_1.q.weight"] = ramp({64, 64, 1, 1}, 1.0f);
  w.tensors["encoder.mid.attn_1.q.bias"] = ramp({64}, 2.0f);
  w.tensors["encoder.mid.attn_1.norm.weight"] = ramp({64}, 3.0f);
  w.tensors["encoder.down.0.block.0.nin_shortcut.weight"] = ramp({32, 16, 1, 1}, 4.0f);
  w.tensors["decoder.up.1.block.1.conv1.weight"] = ramp({64, 64, 3, 3}, 5.0f);
  w.tensors["encoder.mid.attn_1.bogus.weight"] = ramp({2}, 6.0f);
  w.tensors["decoder.up.1.block.9.conv1.weight"] = ramp({2}, 7.0f);  // layer 9 does not exist
  std::vector<std::string> unknown;
  WeightStore out = keys::apply_table(w, keys::ldm_vae_table(c), unknown, "first_stage_model.");
  const Tensor& q = out.tensors.at("encoder.mid_block.attentions.0.to_q.weight");
  EXPECT_EQ(q.shape(), (Shape{64, 64}));
  EXPECT_EQ(q.raw(), w.tensors.at("encoder.mid.attn_1.q.weight").raw());  // a view, not a copy
  EXPECT_EQ(out.tensors.at("encoder.mid_block.attentions.0.to_q.bias").shape(), (Shape{64}));
  EXPECT_TRUE(out.has("encoder.mid_block.attentions.0.group_norm.weight"));
  EXPECT_EQ(out.tensors.at("encoder.down_blocks.0.resnets.0.conv_shortcut.weight").shape(), (Shape{32, 16, 1, 1}));
  EXPECT_EQ(out.tensors.at("decoder.up_blocks.0.resnets.1.conv1.weight").raw(),
            w.tensors.at("decoder.up.1.block.1.conv1.weight").raw());
  EXPECT_EQ(out.tensors.size(), 5u);
  EXPECT_EQ(unknown, (std::vector<std::string>{"first_stage_model.decoder.up.1.block.9.conv1.weight",
                                               "first_stage_model.encoder.mid.attn_1.bogus.weight"}));
}

TEST(KeysOpenClip, SplitsInProjDropsLastLayerAndReportsUnknown) {
  const int C = 64;
  WeightStore w;
  w.source = "synthetic";
  w.tensors["token_embedding.weight"] = ramp({100, C}, 0.5f);
  w.tensors["positional_embedding"] = ramp({77, C}, 0.25f);
  w.tensors["ln_final.weight"] = ramp({C}, 1.5f);
  w.tensors["text_projection"] = ramp({C, C}, 2.5f);
  w.tensors["logit_scale"] = ramp({1}, 3.5f);
  w.tensors["something_else"] = ramp({1}, 4.5f);
  for (int i = 0; i < 3; i++) {
    std::string p = "transformer.resblocks." + std::to_string(i) + ".";
    w.tensors[p + "attn.in_proj_weight"] = ramp({3 * C, C}, 10.0f * (i + 1));
    w.tensors[p + "attn.in_proj_bias"] = ramp({3 * C}, 20.0f * (i + 1));
    w.tensors[p + "mlp.c_fc.weight"] = ramp({4 * C, C}, 30.0f * (i + 1));
    w.tensors[p + "ln_2.bias"] = ramp({C}, 40.0f * (i + 1));
  }
  EXPECT_EQ(keys::openclip_layers(w), 3);
  std::vector<std::string> unknown;
  WeightStore hf = keys::openclip_to_hf(w, 2, unknown, "cond_stage_model.model.");
  EXPECT_EQ(unknown, std::vector<std::string>{"cond_stage_model.model.something_else"});
  EXPECT_FALSE(hf.has("encoder.layers.2.mlp.fc1.weight"));
  EXPECT_TRUE(hf.has("encoder.layers.1.mlp.fc1.weight"));
  EXPECT_TRUE(hf.has("encoder.layers.0.layer_norm2.bias"));
  EXPECT_TRUE(hf.has("embeddings.position_embedding.weight"));
  EXPECT_TRUE(hf.has("final_layer_norm.weight"));
  EXPECT_EQ(hf.tensors.size(), 3u + 2u * 8u);  // 3 top-level + per layer q,k,v (w+b), fc1, ln_2.bias
  const auto full = w.tensors.at("transformer.resblocks.1.attn.in_proj_weight").to_vector();
  const char* names[3] = {"q", "k", "v"};
  for (int j = 0; j < 3; j++) {
    const Tensor& t = hf.tensors.at(std::string("encoder.layers.1.self_attn.") + names[j] + "_proj.weight");
    ASSERT_EQ(t.shape(), (Shape{C, C}));
    auto v = t.to_vector();
    EXPECT_TRUE(std::equal(v.begin(), v.end(), full.begin() + j * C * C)) << names[j];
    auto b = hf.tensors.at(std::string("encoder.layers.1.self_attn.") + names[j] + "_proj.bias").to_vector();
    EXPECT_FLOAT_EQ(b[0], 40.0f + 0.001f * (j * C));
  }
}

// ---------- detection on synthetic stores ----------

TEST(Detect, PredictionFollowsDiffusers) {
  WeightStore w;
  EXPECT_EQ(detect::prediction_from_ldm(w, "sd1", 4), "epsilon");
  EXPECT_EQ(detect::prediction_from_ldm(w, "sd2", 4), "v_prediction");
  EXPECT_EQ(detect::prediction_from_ldm(w, "sd2", 9), "epsilon");  // 2-inpainting
  w.metadata["global_step"] = "875000";                              // 2-base (512)
  EXPECT_EQ(detect::prediction_from_ldm(w, "sd2", 4), "epsilon");
  WeightStore v;
  v.tensors["v_pred"] = Tensor::zeros({0});
  EXPECT_EQ(detect::prediction_from_ldm(v, "sd1", 4), "v_prediction");
  WeightStore m;
  m.metadata["modelspec.prediction_type"] = "epsilon";
  EXPECT_EQ(detect::prediction_from_ldm(m, "sd2", 4), "epsilon");
  // The official scheduler_config.json files have no timestep_spacing: each sampler's own default.
  EXPECT_EQ(detect::default_scheduler("sd2", "v_prediction").timestep_spacing, "");
  EXPECT_EQ(detect::default_scheduler("sd1", "epsilon").steps_offset, 1);
  EXPECT_EQ(detect::default_pad_token_id("sd1"), 49407);
  EXPECT_EQ(detect::default_pad_token_id("sd2"), 0);
}

TEST(Detect, FamilyErrorsNameWhatIsMissing) {
  WeightStore vae;
  vae.source = "vae.safetensors";
  vae.tensors["first_stage_model.encoder.conv_in.weight"] = ramp({4}, 1.0f);
  EXPECT_ERROR(detect::family_from_ldm(vae), "no UNet weights found (model.diffusion_model.*)");
  WeightStore unet_only;
  unet_only.source = "u.safetensors";
  unet_only.tensors["model.diffusion_model.input_blocks.0.0.weight"] = ramp({4}, 1.0f);
  EXPECT_ERROR(detect::family_from_ldm(unet_only), "no text encoder weights found");
  WeightStore xl = unet_only;
  xl.tensors["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = ramp({4}, 1.0f);
  EXPECT_ERROR(detect::family_from_ldm(xl), "SDXL");
  unet_only.tensors["cond_stage_model.model.token_embedding.weight"] = ramp({4}, 1.0f);
  EXPECT_EQ(detect::family_from_ldm(unet_only), "sd2");
}

// ---------- tiny SD1 fixtures: diffusers folder vs LDM single file ----------

namespace {
const std::string kSd1Folder = "sd1/diffusers";
const std::string kSd1Ldm = "sd1/sd1_ldm.safetensors";

void expect_same_structure(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  const UNetConfig &u = a.unet, &v = b.unet;
  EXPECT_EQ(u.in_channels, v.in_channels);
  EXPECT_EQ(u.out_channels, v.out_channels);
  EXPECT_EQ(u.block_out_channels, v.block_out_channels);
  EXPECT_EQ(u.down_block_types, v.down_block_types);
  EXPECT_EQ(u.up_block_types, v.up_block_types);
  EXPECT_EQ(u.layers_per_block, v.layers_per_block);
  for (size_t i = 0; i < u.block_out_channels.size(); i++) EXPECT_EQ(u.heads_at(i), v.heads_at(i)) << "level " << i;
  EXPECT_EQ(u.transformer_layers_per_block, v.transformer_layers_per_block);
  EXPECT_EQ(u.cross_attention_dim, v.cross_attention_dim);
  EXPECT_EQ(u.use_linear_projection, v.use_linear_projection);
  EXPECT_EQ(u.norm_num_groups, v.norm_num_groups);
  EXPECT_EQ(a.vae.block_out_channels, b.vae.block_out_channels);
  EXPECT_EQ(a.vae.layers_per_block, b.vae.layers_per_block);
  EXPECT_EQ(a.vae.latent_channels, b.vae.latent_channels);
  EXPECT_EQ(a.vae.in_channels, b.vae.in_channels);
  EXPECT_EQ(a.vae.out_channels, b.vae.out_channels);
  EXPECT_FLOAT_EQ(a.vae.scaling_factor, b.vae.scaling_factor);
  const TextEncoderConfig &t = a.text, &s = b.text;
  EXPECT_EQ(t.vocab_size, s.vocab_size);
  EXPECT_EQ(t.hidden_size, s.hidden_size);
  EXPECT_EQ(t.intermediate_size, s.intermediate_size);
  EXPECT_EQ(t.num_hidden_layers, s.num_hidden_layers);
  EXPECT_EQ(t.num_attention_heads, s.num_attention_heads);
  EXPECT_EQ(t.max_position_embeddings, s.max_position_embeddings);
  EXPECT_EQ(t.hidden_act, s.hidden_act);
  EXPECT_FLOAT_EQ(t.layer_norm_eps, s.layer_norm_eps);
  const SchedulerConfig &p = a.scheduler, &q = b.scheduler;
  EXPECT_EQ(p.prediction_type, q.prediction_type);
  EXPECT_EQ(p.num_train_timesteps, q.num_train_timesteps);
  EXPECT_FLOAT_EQ(p.beta_start, q.beta_start);
  EXPECT_FLOAT_EQ(p.beta_end, q.beta_end);
  EXPECT_EQ(p.beta_schedule, q.beta_schedule);
  // "" (absent) means each sampler's default; the sd2 fixture's DDIM config spells out "leading".
  if (!p.timestep_spacing.empty() && !q.timestep_spacing.empty()) {
    EXPECT_EQ(p.timestep_spacing, q.timestep_spacing);
  }
  EXPECT_EQ(p.steps_offset, q.steps_offset);
  EXPECT_EQ(p.set_alpha_to_one, q.set_alpha_to_one);
  EXPECT_EQ(p.clip_sample, q.clip_sample);
}
}  // namespace

TEST(CheckpointSd1, FolderReadsConfigJson) {
  Checkpoint ck = open_checkpoint(fixture(kSd1Folder));
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.family, "sd1");
  EXPECT_EQ(c.unet.block_out_channels, (std::vector<int>{32, 64}));
  EXPECT_EQ(c.unet.down_block_types, (std::vector<std::string>{"CrossAttnDownBlock2D", "DownBlock2D"}));
  EXPECT_EQ(c.unet.up_block_types, (std::vector<std::string>{"UpBlock2D", "CrossAttnUpBlock2D"}));
  EXPECT_EQ(c.unet.attention_head_dim, (std::vector<int>{8, 8}));  // int 8 broadcast
  EXPECT_TRUE(c.unet.num_attention_heads.empty());                  // null
  EXPECT_EQ(c.unet.transformer_layers_per_block, (std::vector<int>{1, 1}));
  EXPECT_EQ(c.unet.cross_attention_dim, 64);
  EXPECT_EQ(c.unet.sample_size, 8);
  EXPECT_FALSE(c.unet.use_linear_projection);
  EXPECT_EQ(c.vae.block_out_channels, (std::vector<int>{32, 32, 64, 64}));
  EXPECT_EQ(c.vae.layers_per_block, 1);
  EXPECT_EQ(c.text.hidden_size, 64);
  EXPECT_EQ(c.text.num_attention_heads, 1);
  EXPECT_EQ(c.text.num_hidden_layers, 3);
  EXPECT_EQ(c.text.hidden_act, "quick_gelu");
  EXPECT_EQ(c.scheduler.prediction_type, "epsilon");
  EXPECT_EQ(c.scheduler.timestep_spacing, "");  // absent from the fixture, as in the official repos
  EXPECT_EQ(c.pad_token_id, 49407);
  EXPECT_EQ(ck.tokenizer_dir, fixture(kSd1Folder) + "/tokenizer");
  EXPECT_TRUE(ck.unknown_keys.empty());
  // transformers 5 keys, no text_model. level; the fixture stores the text encoder in F16.
  const Tensor& tok = ck.text_encoder.get("embeddings.token_embedding.weight", {49408, 64});
  EXPECT_EQ(tok.dtype(), DType::F16);
  EXPECT_TRUE(ck.unet.has("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"));
  EXPECT_TRUE(ck.vae.has("encoder.mid_block.attentions.0.to_q.weight"));
}

TEST(CheckpointSd1, SingleFileMatchesFolderBitForBit) {
  Checkpoint f = open_checkpoint(fixture(kSd1Folder));
  Checkpoint s = open_checkpoint(fixture(kSd1Ldm));
  expect_same_structure(s.config, f.config);
  EXPECT_EQ(s.config.unet.sample_size, 64);  // a single file gets SD1's native 512 px
  EXPECT_EQ(s.tokenizer_dir, "");
  EXPECT_TRUE(s.unknown_keys.empty()) << s.unknown_keys.size() << " unknown, first: " << s.unknown_keys[0];
  expect_same_values(s.unet, f.unet, "unet");
  expect_same_values(s.vae, f.vae, "vae");
  expect_same_values(s.text_encoder, f.text_encoder, "text_encoder");
  // The VAE attention projections were 1x1 convs in the LDM file.
  EXPECT_EQ(s.vae.get("decoder.mid_block.attentions.0.to_out.0.weight").shape(), (Shape{64, 64}));
}

TEST(CheckpointSd1, OverridesWinAndInconsistentOnesFail) {
  CheckpointOverrides ov;
  ov.prediction_type = "v_prediction";
  EXPECT_EQ(open_checkpoint(fixture(kSd1Ldm), ov).config.scheduler.prediction_type, "v_prediction");
  ov.prediction_type = "v";
  EXPECT_EQ(open_checkpoint(fixture(kSd1Folder), ov).config.scheduler.prediction_type, "v_prediction");
  ov.prediction_type = "x0";
  EXPECT_ERROR(open_checkpoint(fixture(kSd1Ldm), ov), "unknown prediction type 'x0'");
  CheckpointOverrides fam;
  fam.family = "sd1";
  EXPECT_EQ(open_checkpoint(fixture(kSd1Ldm), fam).config.family, "sd1");
  fam.family = "sd2";
  EXPECT_ERROR(open_checkpoint(fixture(kSd1Ldm), fam), "family override 'sd2' does not match this checkpoint, which is sd1");
  EXPECT_ERROR(open_checkpoint(fixture(kSd1Folder), fam), "does not match");
  fam.family = "sdxl";
  EXPECT_ERROR(open_checkpoint(fixture(kSd1Ldm), fam), "family override 'sdxl' does not match this checkpoint, which is sd1");
  fam.family = "sd3";
  EXPECT_ERROR(open_checkpoint(fixture(kSd1Ldm), fam), "unknown family 'sd3'");
  CheckpointOverrides skip;
  skip.clip_skip = 2;
  EXPECT_NO_THROW(open_checkpoint(fixture(kSd1Ldm), skip));
  skip.clip_skip = 4;  // the tiny text encoder has 3 layers
  EXPECT_ERROR(open_checkpoint(fixture(kSd1Ldm), skip), "clip_skip 4 is out of range");
}

TEST(CheckpointSd1, Describe) {
  std::string d = describe_checkpoint(fixture(kSd1Ldm));
  EXPECT_NE(d.find("family: sd1"), std::string::npos) << d;
  EXPECT_NE(d.find("prediction: epsilon"), std::string::npos) << d;
  EXPECT_NE(d.find("resolution: 512x512"), std::string::npos) << d;
  EXPECT_NE(d.find("unknown keys: 0"), std::string::npos) << d;
  EXPECT_NE(d.find("f16"), std::string::npos) << d;
  std::string f = describe_checkpoint(fixture(kSd1Folder));
  EXPECT_NE(f.find("diffusers folder"), std::string::npos) << f;
  EXPECT_NE(f.find("resolution: 64x64"), std::string::npos) << f;
  // A VAE-only .ckpt is described, not rejected.
  std::string v = describe_checkpoint(fixture("sd1/sd1_vae_ldm.ckpt"));
  EXPECT_NE(v.find("kind: VAE"), std::string::npos) << v;
  EXPECT_NE(v.find("tensors:"), std::string::npos) << v;
}

// ---------- bad inputs ----------

TEST(CheckpointErrors, VaeFileGivenAsModel) {
  EXPECT_ERROR(open_checkpoint(fixture("sd1/sd1_vae_ldm.ckpt")), "no UNet weights found (model.diffusion_model.*)");
}

TEST(CheckpointErrors, CraftedFiles) {
  const std::string d = temp_dir("files");
  // A LoRA-like file.
  write_safetensors(d + "/lora.safetensors",
                    {{"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", ramp({4, 32}, 1.0f)}},
                    {{"ss_network_dim", "4"}});
  EXPECT_ERROR(open_checkpoint(d + "/lora.safetensors"), "no UNet weights found (model.diffusion_model.*) (it looks like a LoRA file)");
  std::string desc = describe_checkpoint(d + "/lora.safetensors");
  EXPECT_NE(desc.find("kind: LoRA"), std::string::npos) << desc;
  EXPECT_NE(desc.find("ss_network_dim"), std::string::npos) << desc;
  // UNet + VAE but no text encoder.
  write_safetensors(d + "/no_te.safetensors", {{"model.diffusion_model.input_blocks.0.0.weight", ramp({32, 4, 3, 3}, 1.0f)},
                                               {"first_stage_model.encoder.conv_in.weight", ramp({32, 3, 3, 3}, 1.0f)}});
  EXPECT_ERROR(open_checkpoint(d + "/no_te.safetensors"), "no text encoder weights found");
  EXPECT_ERROR(open_checkpoint(d + "/does_not_exist.safetensors"), "no such file or folder");
  // A single file whose text encoder hidden size breaks the 64-dim head convention.
  WeightStore s = load_weights(fixture(kSd1Ldm));
  std::map<std::string, Tensor> m;
  for (auto& [k, t] : s.tensors) m[k] = t.to(t.dtype() == DType::I64 ? DType::I64 : DType::F32);
  // Unknown keys are listed, not fatal.
  m["model.diffusion_model.input_blocks.1.0.in_layers.1.weight"] = ramp({2}, 1.0f);
  m["my_extra_tensor"] = ramp({2}, 1.0f);
  m["cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc3.weight"] = ramp({2}, 1.0f);
  m["model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.alpha"] = ramp({1}, 1.0f);
  write_safetensors(d + "/extra.safetensors", m);
  Checkpoint ck = open_checkpoint(d + "/extra.safetensors");
  EXPECT_EQ(ck.unknown_keys,
            (std::vector<std::string>{"cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc3.weight",
                                      "model.diffusion_model.input_blocks.1.0.in_layers.1.weight",
                                      "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.alpha",
                                      "my_extra_tensor"}));
  m.erase("model.diffusion_model.input_blocks.1.0.in_layers.1.weight");
  m["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = ramp({100, 48}, 1.0f);
  write_safetensors(d + "/bad_te.safetensors", m);
  EXPECT_ERROR(open_checkpoint(d + "/bad_te.safetensors"), "hidden size 48 is not a multiple of CLIP's 64-dim heads");
  std::string bad = describe_checkpoint(d + "/bad_te.safetensors");  // described, not rejected
  EXPECT_NE(bad.find("not loadable as a model: [checkpoint]"), std::string::npos) << bad;
  EXPECT_NE(bad.find("hidden size 48"), std::string::npos) << bad;
}

namespace {
std::string copy_sd1_folder(const std::string& name) {
  const std::string d = temp_dir(name);
  fs::copy(fixture(kSd1Folder), d, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return d;
}
void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
void patch_json(const std::string& path, const std::function<void(nlohmann::json&)>& f) {
  nlohmann::json j = nlohmann::json::parse(std::ifstream(path));
  f(j);
  write_text(path, j.dump(2));
}
}  // namespace

TEST(CheckpointErrors, BrokenFolders) {
  {
    std::string d = copy_sd1_folder("no_vae");
    fs::remove_all(d + "/vae");
    EXPECT_ERROR(open_checkpoint(d), "missing part folder 'vae/'");
  }
  {
    std::string d = copy_sd1_folder("no_weights");
    fs::remove(d + "/unet/diffusion_pytorch_model.safetensors");
    EXPECT_ERROR(open_checkpoint(d), "no weights file (diffusion_pytorch_model.safetensors");
  }
  {
    std::string d = copy_sd1_folder("malformed");
    write_text(d + "/unet/config.json", "{\"in_channels\": 4,");
    EXPECT_ERROR(open_checkpoint(d), "unet/config.json: malformed JSON");
  }
  {
    std::string d = copy_sd1_folder("bad_field");
    patch_json(d + "/unet/config.json", [](nlohmann::json& j) { j["layers_per_block"] = "two"; });
    EXPECT_ERROR(open_checkpoint(d), "unet/config.json: field 'layers_per_block' should be an integer, got \"two\"");
  }
  {
    std::string d = copy_sd1_folder("bad_list");
    patch_json(d + "/unet/config.json", [](nlohmann::json& j) { j["attention_head_dim"] = {8, 8, 8}; });
    EXPECT_ERROR(open_checkpoint(d), "field 'attention_head_dim' has 3 entries, expected 2");
  }
  {
    std::string d = copy_sd1_folder("sdxl");
    // SDXL pipelines are loaded (tests/test_sdxl_checkpoint.cpp); an SD1 folder relabelled as one lacks
    // text_encoder_2, and other SDXL pipeline classes are refused.
    patch_json(d + "/model_index.json", [](nlohmann::json& j) { j["_class_name"] = "StableDiffusionXLPipeline"; });
    EXPECT_ERROR(open_checkpoint(d), "missing part folder 'text_encoder_2/'");
    patch_json(d + "/model_index.json", [](nlohmann::json& j) { j["_class_name"] = "StableDiffusionXLInpaintPipeline"; });
    EXPECT_ERROR(open_checkpoint(d), "model_index.json: _class_name 'StableDiffusionXLInpaintPipeline' is not supported");
  }
  {
    std::string d = copy_sd1_folder("not_sd");
    patch_json(d + "/model_index.json", [](nlohmann::json& j) { j.erase("_class_name"); });
    EXPECT_ERROR(open_checkpoint(d), "field '_class_name' is missing");
  }
  {
    std::string d = copy_sd1_folder("sched");
    patch_json(d + "/scheduler/scheduler_config.json", [](nlohmann::json& j) {
      j["prediction_type"] = "v_prediction";
      j["timestep_spacing"] = "trailing";
      j["use_karras_sigmas"] = true;
    });
    Checkpoint ck = open_checkpoint(d);
    EXPECT_EQ(ck.config.scheduler.prediction_type, "v_prediction");
    EXPECT_EQ(ck.config.scheduler.timestep_spacing, "trailing");
    EXPECT_TRUE(ck.config.scheduler.use_karras_sigmas);
  }
  {
    std::string d = temp_dir("plain_dir");
    EXPECT_ERROR(open_checkpoint(d), "folder has no model_index.json");
  }
}

// ---------- real-size key layouts (shapes only; tools/gen_checkpoint_shapes.py) ----------

namespace {
// A store with every key of a real SD1.5 / SD2.1 single file. Tensors are F16 views of one
// shared zero buffer (only shapes are read, except OpenCLIP's in_proj which is sliced: the
// buffer is large enough for it).
WeightStore real_layout(const std::string& which, const std::string& source) {
  static std::shared_ptr<void> buf(std::calloc(8 << 20, 1), std::free);
  std::ifstream in(std::string(EASEL_FIXTURES) + "/../data/checkpoint_shapes.json");
  EXPECT_TRUE(in.good()) << "tests/data/checkpoint_shapes.json missing";
  nlohmann::json j = nlohmann::json::parse(in);
  WeightStore w;
  w.source = source;
  for (auto& [k, s] : j.at(which).items()) w.tensors[k] = Tensor::view_of(buf.get(), s.get<Shape>(), DType::F16, buf);
  return w;
}
}  // namespace

TEST(CheckpointRealLayout, Sd15) {
  WeightStore all = real_layout("sd15", "sd15.safetensors");
  // Shapes only, so the pieces of open_checkpoint are called directly.
  EXPECT_EQ(detect::family_from_ldm(all), "sd1");
  UNetConfig u = detect::unet_from_ldm(all.sub("model.diffusion_model."), "sd1");
  UNetConfig ref;  // SD1.5 defaults
  EXPECT_EQ(u.block_out_channels, ref.block_out_channels);
  EXPECT_EQ(u.down_block_types, ref.down_block_types);
  EXPECT_EQ(u.up_block_types, ref.up_block_types);
  EXPECT_EQ(u.layers_per_block, 2);
  EXPECT_EQ(u.attention_head_dim, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(u.transformer_layers_per_block, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(u.cross_attention_dim, 768);
  EXPECT_FALSE(u.use_linear_projection);
  EXPECT_EQ(u.in_channels, 4);
  VAEConfig v = detect::vae_from_ldm(all.sub("first_stage_model."));
  EXPECT_EQ(v.block_out_channels, (std::vector<int>{128, 256, 512, 512}));
  EXPECT_EQ(v.layers_per_block, 2);
  EXPECT_EQ(v.latent_channels, 4);
  std::vector<std::string> unknown;
  WeightStore un = keys::apply_table(all.sub("model.diffusion_model."), keys::ldm_unet_table(u), unknown, "");
  WeightStore va = keys::apply_table(all.sub("first_stage_model."), keys::ldm_vae_table(v), unknown, "");
  EXPECT_TRUE(unknown.empty()) << unknown.size() << " unknown, first " << unknown[0];
  EXPECT_EQ(un.tensors.size(), all.keys_with_prefix("model.diffusion_model.").size());  // 686 in SD1.5
  EXPECT_EQ(va.tensors.size(), all.keys_with_prefix("first_stage_model.").size());
  EXPECT_EQ(un.get("up_blocks.2.upsamplers.0.conv.weight").shape(), (Shape{640, 640, 3, 3}));
  EXPECT_EQ(un.get("down_blocks.3.resnets.1.time_emb_proj.weight").shape(), (Shape{1280, 1280}));
  EXPECT_EQ(va.get("decoder.mid_block.attentions.0.to_v.weight").shape(), (Shape{512, 512}));
  EXPECT_EQ(va.get("decoder.up_blocks.3.resnets.0.conv_shortcut.weight").shape(), (Shape{128, 256, 1, 1}));
}

TEST(CheckpointRealLayout, Sd21OpenClipAndVPrediction) {
  WeightStore all = real_layout("sd21", "sd21.safetensors");
  EXPECT_EQ(detect::family_from_ldm(all), "sd2");
  UNetConfig u = detect::unet_from_ldm(all.sub("model.diffusion_model."), "sd2");
  EXPECT_EQ(u.attention_head_dim, (std::vector<int>{5, 10, 20, 20}));  // diffusers' SD2 config
  EXPECT_TRUE(u.use_linear_projection);
  EXPECT_EQ(u.cross_attention_dim, 1024);
  EXPECT_EQ(detect::prediction_from_ldm(all, "sd2", u.in_channels), "v_prediction");
  std::vector<std::string> unknown;
  WeightStore oc = all.sub("cond_stage_model.model.");
  EXPECT_EQ(keys::openclip_layers(oc), 24);
  WeightStore te = keys::openclip_to_hf(oc, 23, unknown, "cond_stage_model.model.");
  EXPECT_TRUE(unknown.empty());
  TextEncoderConfig t = detect::text_from_hf(te, "sd2");
  EXPECT_EQ(t.num_hidden_layers, 23);
  EXPECT_EQ(t.num_attention_heads, 16);
  EXPECT_EQ(t.hidden_size, 1024);
  EXPECT_EQ(t.intermediate_size, 4096);
  EXPECT_EQ(t.hidden_act, "gelu");
  EXPECT_EQ(te.get("encoder.layers.22.self_attn.v_proj.weight").shape(), (Shape{1024, 1024}));
  EXPECT_FALSE(te.has("encoder.layers.23.self_attn.v_proj.weight"));
  // 2-inpainting: 9 input channels => epsilon.
  const Tensor& conv_in = all.tensors.at("model.diffusion_model.input_blocks.0.0.weight");
  all.tensors["model.diffusion_model.input_blocks.0.0.weight"] =
      Tensor::view_of(const_cast<void*>(conv_in.raw()), {320, 9, 3, 3}, DType::F16, nullptr);
  UNetConfig ui = detect::unet_from_ldm(all.sub("model.diffusion_model."), "sd2");
  EXPECT_EQ(ui.in_channels, 9);
  EXPECT_EQ(detect::prediction_from_ldm(all, "sd2", ui.in_channels), "epsilon");
}

// ---------- tiny SD2 fixture: OpenCLIP single file ----------

TEST(CheckpointSd2, SingleFileDetectedAsSd2VPrediction) {
  Checkpoint ck = open_checkpoint(fixture("sd2/sd2_ldm.safetensors"));
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.family, "sd2");
  EXPECT_EQ(c.scheduler.prediction_type, "v_prediction");
  EXPECT_TRUE(c.unet.use_linear_projection);
  EXPECT_EQ(c.unet.attention_head_dim, (std::vector<int>{1, 1}));  // 64-dim heads: 64 ch -> 1 head
  EXPECT_EQ(c.unet.sample_size, 96);                               // 768 px
  EXPECT_EQ(c.text.num_hidden_layers, 3);                          // 4 resblocks, the last one dropped
  EXPECT_EQ(c.text.hidden_act, "gelu");
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_TRUE(ck.unknown_keys.empty()) << ck.unknown_keys[0];
  EXPECT_FALSE(ck.text_encoder.has("encoder.layers.3.mlp.fc1.weight"));
  EXPECT_EQ(ck.unet.get("down_blocks.1.attentions.0.proj_in.weight").shape(), (Shape{64, 64}));
  EXPECT_TRUE(ck.unet.has("up_blocks.0.upsamplers.0.conv.weight"));  // output_blocks.2.2.conv

  // The detected config agrees with the fixture's diffusers config.json files.
  ModelConfig ref;
  ref.family = "sd2";
  ref.pad_token_id = 0;
  const std::string d = fixture("sd2/diffusers_configs/");
  ref.unet = parse_unet_config(d + "unet/config.json");
  ref.vae = parse_vae_config(d + "vae/config.json");
  ref.text = parse_text_encoder_config(d + "text_encoder/config.json");
  ref.scheduler = parse_scheduler_config(d + "scheduler/scheduler_config.json");
  expect_same_structure(c, ref);

  // Same text-encoder architecture as the SD1 fixture: the OpenCLIP conversion yields exactly
  // transformers' key set and shapes.
  Checkpoint sd1 = open_checkpoint(fixture(kSd1Folder));
  ASSERT_EQ(ck.text_encoder.tensors.size(), sd1.text_encoder.tensors.size());
  for (auto& [k, t] : sd1.text_encoder.tensors) EXPECT_EQ(ck.text_encoder.get(k).shape(), t.shape()) << k;

  std::string desc = describe_checkpoint(fixture("sd2/sd2_ldm.safetensors"));
  EXPECT_NE(desc.find("family: sd2"), std::string::npos) << desc;
  EXPECT_NE(desc.find("prediction: v_prediction"), std::string::npos) << desc;
  EXPECT_NE(desc.find("resolution: 768x768"), std::string::npos) << desc;
}

TEST(CheckpointSd2, OverridesOnSd2) {
  CheckpointOverrides ov;
  ov.prediction_type = "epsilon";  // e.g. the 512-base saved as safetensors
  EXPECT_EQ(open_checkpoint(fixture("sd2/sd2_ldm.safetensors"), ov).config.scheduler.prediction_type, "epsilon");
  // The 512-base: diffusers decides epsilon from global_step 875000 (a .ckpt's top-level int,
  // which the loader puts in the metadata).
  WeightStore w = load_weights(fixture("sd2/sd2_ldm.safetensors"));
  const std::string d = temp_dir("sd2_base");
  write_safetensors(d + "/base.safetensors", std::map<std::string, Tensor>(w.tensors.begin(), w.tensors.end()),
                    {{"global_step", "875000"}});
  Checkpoint base = open_checkpoint(d + "/base.safetensors");
  EXPECT_EQ(base.config.scheduler.prediction_type, "epsilon");
  EXPECT_EQ(base.config.unet.sample_size, 64);
  CheckpointOverrides fam;
  fam.family = "sd1";
  EXPECT_ERROR(open_checkpoint(fixture("sd2/sd2_ldm.safetensors"), fam),
               "family override 'sd1' does not match this checkpoint, which is sd2 (its text encoder is OpenCLIP");
}

TEST(CheckpointSd2, FolderBuiltFromTheSingleFileRoundTrips) {
  // An SD2 diffusers folder: the fixture's config files, the SD1 tokenizer vocabulary with SD2's
  // pad token "!", and weights written from the converted single file.
  Checkpoint s = open_checkpoint(fixture("sd2/sd2_ldm.safetensors"));
  const std::string d = temp_dir("sd2_folder");
  fs::copy(fixture("sd2/diffusers_configs"), d, fs::copy_options::recursive);
  for (const char* f : {"vocab.json", "merges.txt"})
    fs::copy_file(fixture(kSd1Folder) + "/tokenizer/" + f, d + "/tokenizer/" + f);
  auto dump = [](const WeightStore& w, const std::string& path) {
    std::map<std::string, Tensor> m(w.tensors.begin(), w.tensors.end());
    write_safetensors(path, m);
  };
  dump(s.unet, d + "/unet/diffusion_pytorch_model.safetensors");
  dump(s.vae, d + "/vae/diffusion_pytorch_model.safetensors");
  std::map<std::string, Tensor> te;  // with the text_model. level, as transformers 4 saved it
  for (auto& [k, t] : s.text_encoder.tensors) te["text_model." + k] = t;
  write_safetensors(d + "/text_encoder/model.safetensors", te);
  Checkpoint f = open_checkpoint(d);
  expect_same_structure(f.config, s.config);
  EXPECT_EQ(f.config.pad_token_id, 0);  // "!" looked up in vocab.json
  EXPECT_EQ(f.tokenizer_dir, d + "/tokenizer");
  expect_same_values(f.unet, s.unet, "unet");
  expect_same_values(f.vae, s.vae, "vae");
  expect_same_values(f.text_encoder, s.text_encoder, "text_encoder");
}

TEST(CheckpointSd1, ShardedAndFp16VariantWeights) {
  std::string d = copy_sd1_folder("sharded");
  Checkpoint ref = open_checkpoint(fixture(kSd1Folder));
  // unet: two shards + index.json (as from_pretrained writes large models).
  fs::remove(d + "/unet/diffusion_pytorch_model.safetensors");
  std::map<std::string, Tensor> a, b;
  nlohmann::json map = nlohmann::json::object();
  size_t i = 0;
  for (auto& [k, t] : ref.unet.tensors) {
    bool first = i++ % 2 == 0;
    (first ? a : b)[k] = t;
    map[k] = first ? "diffusion_pytorch_model-00001-of-00002.safetensors" : "diffusion_pytorch_model-00002-of-00002.safetensors";
  }
  write_safetensors(d + "/unet/diffusion_pytorch_model-00001-of-00002.safetensors", a);
  write_safetensors(d + "/unet/diffusion_pytorch_model-00002-of-00002.safetensors", b);
  write_text(d + "/unet/diffusion_pytorch_model.safetensors.index.json",
             nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump());
  // vae: only the fp16 variant file.
  fs::rename(d + "/vae/diffusion_pytorch_model.safetensors", d + "/vae/diffusion_pytorch_model.fp16.safetensors");
  Checkpoint s = open_checkpoint(d);
  expect_same_values(s.unet, ref.unet, "unet");
  expect_same_values(s.vae, ref.vae, "vae");
  // A weight_map entry whose shard lacks it is an error naming the index file and the key.
  map["extra.weight"] = "diffusion_pytorch_model-00001-of-00002.safetensors";
  write_text(d + "/unet/diffusion_pytorch_model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  EXPECT_ERROR(open_checkpoint(d), "index.json: tensor 'extra.weight' listed in weight_map is not in");
}
