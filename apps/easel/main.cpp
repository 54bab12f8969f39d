// easel command line: generate, info. Flag names follow stable-diffusion.cpp's sd-cli
// where they overlap. Every library error becomes one message and exit status 1.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "control/controlnet.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "lora/lora_apply.h"
#include "models/prompt.h"
#include "ops/ops.h"
#include "pipeline/params_text.h"
#include "pipeline/pipeline.h"
#include "pipeline/progress.h"
#include "control_args.h"
#include "preprocess_cmd.h"

using namespace easel;
namespace fs = std::filesystem;

namespace {

struct GenerateArgs {
  std::string model, output = "output.png", init_img, family, prediction, precision = "auto";
  std::string refiner, original_size, target_size, crop;
  std::vector<std::string> loras;  // --lora FILE[:unet[:te]]
  std::string lora_dir;            // --lora-dir for <lora:name:...> prompt tags
  std::string lora_apply = "auto";  // --lora-apply merge|bypass|auto
  GenerateOptions opt;
  int64_t seed = 42;
  int threads = 0;
  int64_t weight_cache_mb = -1;
  bool no_hash = false;
  bool low_memory = false;
  bool winograd = false;
  ControlArgs control;  // --control units (control_args.h)
};

// Fails early (before minutes of sampling) when the output cannot be written.
void check_writable(const std::string& out) {
  fs::path p(out);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("output", out + ": directory '" + dir.string() + "' does not exist");
  if (fs::is_directory(p, ec)) fail("output", out + ": is a directory");
  fs::path probe = dir / (".easel-probe-" + std::to_string(::getpid()));
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) fail("output", out + ": cannot write to '" + dir.string() + "': " + std::strerror(errno));
  std::fclose(f);
  fs::remove(probe, ec);
}

// "WxH" -> (w, h); "" leaves them unchanged.
void parse_size(const std::string& flag, const std::string& v, int& w, int& h, char sep = 'x') {
  if (v.empty()) return;
  size_t x = v.find(sep);
  try {
    size_t n1 = 0, n2 = 0;
    if (x == std::string::npos) throw std::invalid_argument(v);
    w = std::stoi(v.substr(0, x), &n1);
    h = std::stoi(v.substr(x + 1), &n2);
    if (n1 != x || n2 != v.size() - x - 1 || w < 0 || h < 0) throw std::invalid_argument(v);
  } catch (const std::exception&) {
    fail("generate", flag + " '" + v + "' is not " + (sep == 'x' ? "WIDTHxHEIGHT" : "X,Y") + " with non-negative integers");
  }
}

// <lora:NAME:...> -> DIR/NAME.{safetensors,pt,ckpt,bin} or NAME.* anywhere below DIR (as A1111).
std::string find_lora(const std::string& dir, const std::string& name) {
  if (dir.empty())
    fail("lora", "prompt tag <lora:" + name + ":...>: give the folder holding '" + name + "' with --lora-dir");
  static const char* exts[] = {".safetensors", ".pt", ".ckpt", ".bin"};
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("lora", "--lora-dir '" + dir + "' is not a folder");
  for (const char* e : exts)
    if (fs::is_regular_file(fs::path(dir) / (name + e), ec)) return (fs::path(dir) / (name + e)).string();
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->path().stem().string() != name) continue;
    for (const char* e : exts)
      if (it->path().extension() == e) return it->path().string();
  }
  fail("lora", "prompt tag <lora:" + name + ":...>: no " + name + ".safetensors (.pt, .ckpt, .bin) in --lora-dir '" +
                   dir + "'");
}

// --lora flags and the prompt's <lora:...> tags -> merged into pipe; prints one line per LoRA.
// Returns the tags to add to the infotext prompt for --lora files; *hashes gets A1111's
// "Lora hashes" value ("name: hash, ...") unless --no-hash.
std::string apply_loras(Pipeline& pipe, const GenerateArgs& a, std::string* hashes) {
  if (a.lora_apply != "auto" && a.lora_apply != "merge" && a.lora_apply != "bypass")
    fail("lora", "--lora-apply '" + a.lora_apply + "': expected merge, bypass or auto");
  std::vector<lora::LoraSpec> specs;
  std::string tags;
  auto add = [&](const std::string& path, float unet, float te, std::string name) {
    if (!a.no_hash) {
      for (char c : {':', ','}) name.erase(std::remove(name.begin(), name.end(), c), name.end());
      *hashes += (hashes->empty() ? "" : ", ") + name + ": " + lora::lora_short_hash(path);
    }
    lora::LoraSpec s;
    s.file = lora::read_lora(path, pipe.checkpoint());
    s.unet_strength = unet;
    s.te_strength = te;
    specs.push_back(std::move(s));
  };
  for (const std::string& arg : a.loras) {
    std::string path;
    float unet, te;
    lora::parse_lora_arg(arg, path, unet, te);
    add(path, unet, te, fs::path(path).stem().string());
    char buf[64];  // A1111 tag order: <lora:name:te:unet>
    if (unet == te) std::snprintf(buf, sizeof buf, ":%g>", te);
    else std::snprintf(buf, sizeof buf, ":%g:%g>", te, unet);
    tags += " <lora:" + fs::path(path).stem().string() + buf;
  }
  std::vector<LoraTag> found;
  extract_lora_tags(a.opt.prompt, &found);
  for (const LoraTag& t : found) add(find_lora(a.lora_dir, t.name), t.unet_weight, t.te_weight, t.name);
  if (specs.empty()) return "";
  const auto mode = a.lora_apply == "merge"    ? Pipeline::LoraApply::Merge
                    : a.lora_apply == "bypass" ? Pipeline::LoraApply::Bypass
                                               : Pipeline::LoraApply::Auto;
  pipe.set_loras(specs, mode);
  const bool merged = pipe.lora_mode() == Pipeline::LoraApply::Merge;
  for (const auto& s : specs)
    std::fprintf(stderr, "%s [%s]\n", lora::summary(s).c_str(), merged ? "merged" : "bypass");
  return tags;
}

int run_generate(GenerateArgs& a) {
  if (a.threads > 0) ops::set_num_threads(a.threads);
  ops::set_winograd(a.winograd);
  if (a.low_memory) {
    a.opt.low_memory = true;
    if (a.weight_cache_mb < 0) a.weight_cache_mb = 0;
  }
  if (a.weight_cache_mb >= 0) ops::set_weight_cache_limit((size_t)a.weight_cache_mb << 20);
  if (a.precision == "bf16") ops::set_compute_dtype(DType::BF16);
  else if (a.precision == "f32") ops::set_compute_dtype(DType::F32);
  else if (a.precision == "auto") ops::set_compute_dtype(ops::bf16_is_fast() ? DType::BF16 : DType::F32);
  else fail("generate", "unknown precision '" + a.precision + "' (auto, f32, bf16)");
  check_writable(a.output);
  a.opt.seed = (uint64_t)a.seed;
  if (!a.init_img.empty()) a.opt.init_image = read_image(a.init_img, 3);
  CheckpointOverrides ov;
  ov.family = a.family;
  ov.prediction_type = a.prediction;
  parse_size("--original-size", a.original_size, a.opt.original_width, a.opt.original_height);
  parse_size("--target-size", a.target_size, a.opt.target_width, a.opt.target_height);
  parse_size("--crop", a.crop, a.opt.crop_left, a.opt.crop_top, ',');
  auto pipe = Pipeline::load(a.model, ov);
  // Measured (BENCHMARKS.md, SDXL 1024x1024 on 24 GiB): a packed f32 copy of a UNet this large is not
  // clearly faster (59.8-67.5 vs 56.0-65.3 s/step) and takes the peak RSS to 23 GiB, so a UNet whose f32
  // copy exceeds a quarter of RAM runs in low-memory mode unless the user sets --weight-cache-mb.
  if (!a.low_memory && a.weight_cache_mb < 0) {
    double unet_f32 = 0;
    for (auto& [k, t] : pipe->checkpoint().unet.tensors) unet_f32 += 4.0 * (double)t.numel();
    double ram = (double)::sysconf(_SC_PHYS_PAGES) * (double)::sysconf(_SC_PAGE_SIZE);
    if (ram > 0 && unet_f32 > ram / 4) {
      a.opt.low_memory = true;
      ops::set_weight_cache_limit(0);
      std::fprintf(stderr, "easel: large UNet (%.1f GiB in f32): low-memory mode (--weight-cache-mb N to cache packed weights)\n",
                   unet_f32 / (1 << 30));
    }
  }
  std::unique_ptr<Pipeline> refiner;
  if (!a.refiner.empty()) {
    refiner = Pipeline::load(a.refiner);
    a.opt.refiner = refiner.get();
  }
  // ControlNet/adapter units: loaded (and Control-LoRAs built) before LoRAs change the weights.
  auto control_info = build_control_units(a.control, *pipe, a.opt);
  pipe->validate(a.opt);  // before any heavy work
  std::string lora_hashes;
  std::string lora_tags = apply_loras(*pipe, a, &lora_hashes);

  Progress bar("sampling", a.opt.steps);
  a.opt.on_step = [&](int step, int total) {
    bar.set_total(total);
    bar.update(step);
    return true;
  };
  GenerateResult r = pipe->generate(a.opt);
  bar.finish();

  GenParams gp;
  gp.prompt = a.opt.prompt + lora_tags;
  gp.negative_prompt = a.opt.negative_prompt;
  gp.steps = a.opt.steps;
  gp.sampler = a.opt.sampler;
  gp.scheduler = a.opt.scheduler;
  gp.cfg_scale = a.opt.cfg_scale;
  gp.seed = a.opt.seed;
  gp.width = pipe->width_for(a.opt);
  gp.height = pipe->height_for(a.opt);
  gp.model_name = fs::path(a.model).stem().string();
  if (!a.no_hash && fs::is_regular_file(a.model)) gp.model_hash = a1111_model_hash(a.model);
  if (a.opt.init_image) gp.denoising_strength = a.opt.strength;
  gp.clip_skip = a.opt.clip_skip;
  gp.rng = a.opt.rng;
  if (refiner) {  // as A1111's infotext
    std::string name = fs::path(a.refiner).stem().string();
    if (!a.no_hash && fs::is_regular_file(a.refiner)) name += " [" + a1111_model_hash(a.refiner) + "]";
    gp.extra.push_back({"Refiner", name});
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", a.opt.refiner_start);
    gp.extra.push_back({"Refiner switch at", buf});
  }
  if (!lora_hashes.empty()) gp.extra.push_back({"Lora hashes", lora_hashes});
  for (auto& kv : control_info) gp.extra.push_back(kv);
  write_png(a.output, r.image, {{"parameters", a1111_parameters(gp)}});
  std::fprintf(stderr, "wrote %s\n", a.output.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"easel: Stable Diffusion on the CPU"};
  app.require_subcommand(1);

  GenerateArgs g;
  auto* gen = app.add_subcommand("generate", "text-to-image / image-to-image");
  gen->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // later flags win
  gen->add_option("-m,--model", g.model, "checkpoint file (.safetensors/.ckpt) or diffusers folder")->required();
  gen->add_option("-p,--prompt", g.opt.prompt, "prompt (A1111 emphasis syntax)")->required();
  gen->add_option("-n,--negative-prompt", g.opt.negative_prompt, "negative prompt");
  gen->add_option("--steps", g.opt.steps, "sampling steps")->capture_default_str();
  gen->add_option("--cfg-scale", g.opt.cfg_scale, "classifier-free guidance scale")->capture_default_str();
  gen->add_option("-s,--seed", g.seed, "seed")->capture_default_str();
  gen->add_option("--sampler,--sampling-method", g.opt.sampler, "euler | euler_a | ddim | dpmpp_2m | heun | lms | dpmpp_2m_sde | pndm; k_euler, k_euler_a, k_dpmpp_2m, k_heun, k_lms = A1111/k-diffusion")
      ->capture_default_str();
  gen->add_option("--scheduler,--schedule", g.opt.scheduler, "normal | karras")->capture_default_str();
  gen->add_option("-W,--width", g.opt.width, "image width (default: the model's native size, 1024 for SDXL)");
  gen->add_option("-H,--height", g.opt.height, "image height (default: native)");
  gen->add_option("-i,--init-img", g.init_img, "init image for img2img (PNG/JPEG)");
  gen->add_option("--strength", g.opt.strength, "img2img denoising strength")->capture_default_str();
  gen->add_option("--rng", g.opt.rng, "torch-cpu (diffusers/ComfyUI) | philox (A1111 GPU)")->capture_default_str();
  gen->add_option("--clip-skip", g.opt.clip_skip, "1 = last CLIP layer, 2 = penultimate (0 = model default)");
  gen->add_option("-t,--threads", g.threads, "CPU threads (0 = all)");
  gen->add_option("-o,--output", g.output, "output PNG")->capture_default_str();
  gen->add_option("--family", g.family, "override detection: sd1 | sd2 | sdxl | sdxl_refiner");
  gen->add_option("--refiner", g.refiner, "SDXL refiner checkpoint: finishes the last steps (base -> refiner hand-off)");
  gen->add_option("--refiner-start", g.opt.refiner_start, "fraction of the denoising after which the refiner takes over")
      ->capture_default_str();
  gen->add_option("--aesthetic-score", g.opt.aesthetic_score, "SDXL refiner aesthetic score")->capture_default_str();
  gen->add_option("--negative-aesthetic-score", g.opt.negative_aesthetic_score, "SDXL refiner negative aesthetic score")
      ->capture_default_str();
  gen->add_option("--original-size", g.original_size, "SDXL micro-conditioning original_size WxH (default: the image size)");
  gen->add_option("--target-size", g.target_size, "SDXL micro-conditioning target_size WxH (default: the image size)");
  gen->add_option("--crop", g.crop, "SDXL micro-conditioning crops_coords_top_left as LEFT,TOP (default 0,0)");
  gen->add_flag("--vae-tiling", g.opt.vae_tiling, "decode/encode the VAE in overlapping tiles (bounded memory for large images)");
  gen->add_option("--prediction", g.prediction, "override detection: epsilon | v_prediction");
  gen->add_option("--precision", g.precision, "matmul precision: auto (bf16 where the CPU has AMX, else f32) | f32 | bf16")->capture_default_str();
  gen->add_option("--weight-cache-mb", g.weight_cache_mb,
                  "memory for packed weights (default: half of RAM; 0 = re-pack each step, lowest memory)");
  gen->add_flag("--low-memory", g.low_memory,
                "lowest peak memory: no packed-weight cache, weight pages dropped between phases (~25% slower)");
  gen->add_flag("--winograd", g.winograd, "Winograd 3x3 convolutions: ~15% faster steps, ~4 GiB more memory (SD1.5)");
  gen->add_option("--lora", g.loras, "LoRA/LyCORIS file merged into the model, FILE[:unet_strength[:te_strength]] (repeatable; te defaults to unet, unet to 1)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  gen->add_option("--lora-apply", g.lora_apply,
                  "merge: into f32 copies of the weights (no per-step cost); bypass: beside the layers at run time "
                  "(weights untouched, instant); auto: merge unless the copies would exceed 2 GiB (SDXL: bypass)")
      ->capture_default_str();
  gen->add_option("--lora-dir", g.lora_dir, "folder searched for the prompt's <lora:name:te[:unet]> tags (A1111 syntax)");
  gen->add_flag("--no-hash", g.no_hash, "skip the model hash in the PNG parameters");
  add_control_options(gen, g.control);

  std::string info_path;
  auto* info = app.add_subcommand("info", "describe a checkpoint, folder or weight file");
  info->add_option("file", info_path, "file or folder")->required();
  auto* pre = add_preprocess_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*gen) return run_generate(g);
    if (*pre) return run_preprocess_command();
    if (*info) {
      if (std::string c = describe_controlnet(info_path); !c.empty()) {  // ControlNet file or folder
        std::cout << c;
        return 0;
      }
      std::string d = describe_checkpoint(info_path);
      std::cout << d;
      // A LoRA/LyCORIS file: its format, kinds, ranks, alphas, targets and kohya ss_* metadata.
      if (d.find("kind: LoRA / LyCORIS") != std::string::npos) std::cout << "\n" << lora::describe_lora(info_path);
      return 0;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "easel: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "easel: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "easel: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
