// Control-LoRA parity on the tiny SDXL base (tests/fixtures/t2i_adapter/control_lora_sdxl.safetensors in
// Stability's key layout, written by tools/fixtures/t2i_adapter.py): the rebuilt ControlNet's outputs against
// (a) ComfyUI's construction (W_base + up @ down, every .weight/.bias of the file used) and (b) diffusers 0.42's
// ControlNetModel.from_unet + load_lora_adapter (which keeps the base UNet's biases on the LoRA'd layers);
// bad inputs.
#include <fstream>
#include <functional>
#include <map>

#include "common.h"
#include "control/control_lora.h"
#include "control/control_unit.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "pipeline/pipeline.h"

using namespace easel;

namespace {

std::string fx(const std::string& rel) { return test::fixture("t2i_adapter/" + rel); }

void expect_matches(const ControlNetModel& cn, const std::string& tag) {
  WeightStore ref = test::load_ref("t2i_adapter/ref_control_lora.safetensors");
  Tensor sample = ref.get("sample").to(DType::F32);
  Tensor ctx = ref.get("encoder_hidden_states").to(DType::F32);
  Tensor te = ref.get("text_embeds").to(DType::F32), ids = ref.get("time_ids").to(DType::F32);
  const Tensor& u8 = ref.get("controlnet_cond_u8");
  Tensor cond = Tensor::empty(u8.shape());
  for (int64_t i = 0; i < cond.numel(); i++) cond.f32()[i] = (float)u8.data<uint8_t>()[i] / 255.0f;
  const int n_down = std::stoi(ref.metadata.at("n_down"));
  ASSERT_EQ((int)cn.num_down_residuals(), n_down);
  ControlNetOutput o = cn.forward(sample, {981.0f}, ctx, cn.embed_condition(cond), &te, &ids);
  // fp32: merged weights (W + up @ down) against PyTorch's (merged for ComfyUI, unmerged PEFT for diffusers).
  for (int i = 0; i < n_down; i++) {
    const Tensor& r = ref.get(tag + ".down_" + std::to_string(i));
    EXPECT_TRUE(test::allclose(o.down[i], r, 1e-4f * std::max(1.0f, test::max_abs(r)), 1e-4f)) << tag << " " << i;
  }
  const Tensor& r = ref.get(tag + ".mid");
  EXPECT_TRUE(test::allclose(o.mid, r, 1e-4f * std::max(1.0f, test::max_abs(r)), 1e-4f)) << tag << " mid";
}

// A copy of the Control-LoRA file with `edit` applied to its tensors.
std::string edited(const std::string& name, const std::function<void(std::map<std::string, Tensor>&)>& edit) {
  WeightStore w = load_weights(fx("control_lora_sdxl.safetensors"));
  std::map<std::string, Tensor> t(w.tensors.begin(), w.tensors.end());
  edit(t);
  const std::string path = test::temp_dir("control_lora") + "/" + name;
  save_safetensors(path, t);
  return path;
}

}  // namespace

TEST(ControlLora, MatchesComfyUIConstruction) {
  Checkpoint base = open_checkpoint(test::fixture("sdxl/diffusers"));
  ControlNetModel cn = load_control_lora(fx("control_lora_sdxl.safetensors"), base);
  EXPECT_EQ(cn.config.family, "sdxl");
  EXPECT_EQ(cn.config.conditioning_channels, 3);
  EXPECT_EQ(cn.config.conditioning_embedding_out_channels, (std::vector<int>{8, 8, 16, 16}));
  EXPECT_EQ(cn.config.unet.block_out_channels, base.config.unet.block_out_channels);
  expect_matches(cn, "comfy");
}

TEST(ControlLora, MatchesDiffusersWithItsBiases) {
  Checkpoint base = open_checkpoint(test::fixture("sdxl/diffusers"));
  ControlLoraOptions opt;
  opt.biases = ControlLoraOptions::Biases::Diffusers;
  expect_matches(load_control_lora(fx("control_lora_sdxl.safetensors"), base, opt), "diffusers");
  // The single-file (sgm layout) base is the same model.
  Checkpoint single = open_checkpoint(test::fixture("sdxl/sdxl_ldm.safetensors"));
  expect_matches(load_control_lora(fx("control_lora_sdxl.safetensors"), single, opt), "diffusers");
}

TEST(ControlLora, BadInputs) {
  Checkpoint xl = open_checkpoint(test::fixture("sdxl/diffusers"));
  Checkpoint sd1 = open_checkpoint(test::fixture("sd1/diffusers"));
  const std::string f = fx("control_lora_sdxl.safetensors");
  EXPECT_ERROR(load_control_lora(f, sd1), "this Control-LoRA is for SDXL, the model is SD1/SD2");
  EXPECT_ERROR(load_control_lora(fx("missing.safetensors"), xl), "missing.safetensors: file not found");
  EXPECT_ERROR(load_control_lora(test::fixture("controlnet/sdxl_cn/diffusion_pytorch_model.safetensors"), xl),
               "it is a full ControlNet");
  EXPECT_ERROR(load_control_lora(fx("sdxl_adapter/diffusion_pytorch_model.safetensors"), xl), "not a Control-LoRA");
  {  // truncated
    std::ifstream in(f, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    const std::string p = test::temp_dir("control_lora_trunc") + "/trunc.safetensors";
    std::ofstream(p, std::ios::binary).write(bytes.data(), (std::streamsize)(bytes.size() * 2 / 3));
    EXPECT_ERROR(load_control_lora(p, xl), "trunc.safetensors");
  }
  const std::string q = "input_blocks.4.1.transformer_blocks.0.attn1.to_q";
  EXPECT_ERROR(load_control_lora(edited("rank.safetensors", [&](auto& t) { t[q + ".up"] = test::ramp({64, 3}, 0.1f); }),
                                 xl),
               "do not fit the model weight");
  EXPECT_ERROR(load_control_lora(edited("half.safetensors", [&](auto& t) { t.erase(q + ".down"); }), xl),
               "has only one of .up / .down");
  EXPECT_ERROR(load_control_lora(edited("unknown.safetensors",
                                        [&](auto& t) { t["output_blocks.0.0.in_layers.2.up"] = t[q + ".up"]; }),
                                 xl),
               "'output_blocks.0.0.in_layers.2.up' belongs to no ControlNet layer");
  EXPECT_ERROR(load_control_lora(edited("shape.safetensors",
                                        [&](auto& t) { t["zero_convs.0.0.bias"] = test::ramp({7}, 0.1f); }),
                                 xl),
               "controlnet_down_blocks.0.bias");
  EXPECT_ERROR(load_control_lora(edited("nohint.safetensors",
                                        [&](auto& t) {
                                          for (auto it = t.begin(); it != t.end();)
                                            it = it->first.rfind("input_hint_block.", 0) == 0 ? t.erase(it) : ++it;
                                        }),
                                 xl),
               "input_hint_block has no convolutions");
}

TEST(ControlLora, PipelineMatchesDiffusers) {
  // StableDiffusionXLControlNetPipeline with diffusers' Control-LoRA ControlNet, strength 0.9, 4 steps.
  auto pipe = Pipeline::load(test::fixture("sdxl/sdxl_ldm.safetensors"));
  ControlLoraOptions opt;
  opt.biases = ControlLoraOptions::Biases::Diffusers;
  ControlUnit u;
  u.name = fx("control_lora_sdxl.safetensors");
  u.controlnet = std::make_shared<ControlNetModel>(load_control_lora(u.name, pipe->checkpoint(), opt));
  u.guide = read_image(fx("guide_cl.png"), 3);
  u.strength = 0.9f;
  u.resize_mode = ResizeMode::JustResize;
  GenerateOptions o = test::tiny_options(true);
  o.steps = 4;
  o.control.push_back(u);
  test::generate_and_compare(*pipe, o, "t2i_adapter/ref_control_lora_sdxl.safetensors");
}
