// Control units (ControlNet, Control-LoRA, T2I-Adapter) as A1111's sd-webui-controlnet and diffusers'
// ControlNet pipelines apply them: per-unit strength, start/end window, guide resize mode and control
// mode; diffusers' guess mode; several units summed (MultiControlNetModel / MultiAdapter).
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/controlnet/pipeline_controlnet.py
//   https://github.com/Mikubill/sd-webui-controlnet (scripts/controlnet.py detectmap_proc, scripts/hook.py)
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "control/controlnet.h"
#include "io/image.h"

namespace easel {

// How a guide of another size becomes W x H (sd-webui-controlnet's ResizeMode):
//   JustResize  stretch to W x H (diffusers' behaviour; PIL Lanczos, bit-identical to diffusers)
//   CropResize  scale by max(W/w, H/h) to cover, centre-crop ("Crop and Resize", A1111's default)
//   ResizeFill  scale by min(W/w, H/h) to fit, centre on the median colour of the guide's border pixels
//               ("Resize and Fill"). Scaled sizes are round(w*k) x round(h*k), offsets (new - W) // 2, as A1111.
// The resampling filter is PIL's Lanczos in every mode (A1111 uses OpenCV area/cubic with special cases for
// binary maps; geometry and fill colour follow A1111 exactly).
enum class ResizeMode { JustResize, CropResize, ResizeFill };
// sd-webui-controlnet's control_mode. Balanced: strength on every output, both CFG halves.
// Prompt ("My prompt is more important"): soft weights strength * 0.825^(12-i) over the 13 outputs
// (i = 0..12, mid = 12; T2I-Adapters: 0.25, 0.62, 0.825, 1.0). Control ("ControlNet is more important"):
// the soft weights, applied to the conditional half only (the unconditional half gets nothing).
enum class ControlMode { Balanced, Prompt, Control };

ResizeMode parse_resize_mode(const std::string& s);    // just_resize | crop_resize | resize_fill (A1111 names too)
ControlMode parse_control_mode(const std::string& s);  // balanced | prompt | control (A1111 labels too)
const char* resize_mode_name(ResizeMode m);            // A1111's infotext labels ("Crop and Resize", ...)
const char* control_mode_name(ControlMode m);          // "Balanced", "My prompt is more important", ...

// A T2I-Adapter as a unit: features for a guide [1, 3, H, W] in [0, 1] (already W x H), in the UNet's
// down-block order (see UNetExtras::down_intrablock). Computed once per image.
using AdapterFn = std::function<std::vector<Tensor>(const Tensor& guide01)>;

struct ControlUnit {
  std::shared_ptr<const ControlNetModel> controlnet;  // ControlNet or Control-LoRA (exactly one of the two)
  AdapterFn adapter;                                  // T2I-Adapter
  std::string name;                                   // model file, for messages and the infotext
  Image guide;                                        // finished guide image, any size (resized per resize_mode)
  float strength = 1.0f;                              // [0, 2] (A1111's range)
  double start = 0.0, end = 1.0;                      // fractions of the steps (diffusers control_guidance_*)
  ResizeMode resize_mode = ResizeMode::CropResize;
  ControlMode control_mode = ControlMode::Balanced;
};

// The guide at W x H per `mode` (RGB).
Image resize_guide(const Image& guide, int width, int height, ResizeMode mode);
// diffusers' controlnet_keep: a unit runs at step i of n unless i/n < start or (i+1)/n > end.
bool control_active(double start, double end, size_t i, size_t n);
// Per-output scales for n outputs (the last is the mid block for ControlNets): strength everywhere
// (balanced); strength * 0.825^(n-1-i) (prompt/control modes; A1111 uses 13 outputs); with guess_mode,
// diffusers' logspace(-1, 0, n) * strength instead. Adapters (is_adapter): 0.25, 0.62, 0.825, 1.0 soft weights.
std::vector<float> control_scales(size_t n, float strength, ControlMode mode, bool guess_mode, bool is_adapter = false);
// Checks a unit's settings (strength in [0, 2], 0 <= start < end <= 1 ... ) and its model against the base
// model; throws easel::Error naming the unit's file.
void validate_unit(const ControlUnit& u, const ModelConfig& base);

// Applies a set of units over one denoising run. Built once per image (guides resized, hint embeddings and
// adapter features computed), then asked for each step's residuals.
class ControlRunner {
 public:
  // width/height: the image size; cfg_on: the batch is [uncond, cond]; guess_mode: diffusers' guess mode.
  ControlRunner(const std::vector<ControlUnit>& units, int width, int height, bool cfg_on, bool guess_mode);
  bool empty() const { return units_.empty(); }
  // Residuals for step i of n: model_in is the scheduler-scaled latent [1, 4, h, w]; context, text_embeds,
  // time_ids as given to the UNet (batch 2 with CFG: uncond then cond). Fills ex.down_residuals /
  // mid_residual / down_intrablock (pointing into this object) or leaves them null when no unit is active.
  void step(size_t i, size_t n, const Tensor& model_in, float timestep, const Tensor& context,
            const Tensor* text_embeds, const Tensor* time_ids, UNetExtras& ex);
  // The guides as used (W x H), in unit order (--save-guide).
  const std::vector<Image>& guides() const { return guides_; }

 private:
  struct Prepared {
    const ControlUnit* unit;
    Tensor cond_embedding;          // ControlNet: [1, C0, h, w]
    std::vector<Tensor> features;   // adapter: scaled features [1, C, h_i, w_i]
  };
  std::vector<Prepared> units_;
  std::vector<Image> guides_;
  bool cfg_on_, guess_;
  std::vector<Tensor> down_, intra_;
  Tensor mid_;
};

}  // namespace easel
