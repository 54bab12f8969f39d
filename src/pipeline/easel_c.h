/* easel C API: load a model, generate an image, read errors. Every call returns a status
 * (0 = ok); on failure easel_last_error() gives the message. Nothing here exits. */
#ifndef EASEL_C_H
#define EASEL_C_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct easel_pipeline easel_pipeline;

typedef struct easel_generate_params {
  const char* prompt;
  const char* negative_prompt; /* may be NULL */
  int steps;                   /* e.g. 20 */
  float cfg_scale;             /* e.g. 7 */
  uint64_t seed;
  const char* sampler;   /* "euler", "euler_a", "ddim", "dpmpp_2m"; NULL = euler_a */
  const char* scheduler; /* "normal", "karras"; NULL = normal */
  const char* rng;       /* "torch-cpu", "philox"; NULL = torch-cpu */
  int width, height;
  int clip_skip;                 /* 0 = default */
  const uint8_t* init_rgb;       /* img2img: width*height*3 bytes, or NULL */
  float strength;                /* img2img strength */
  int vae_tiling;                /* 1 = tiled VAE (bounded memory for large images) */
} easel_generate_params;

/* Fills defaults (steps 20, cfg 7, 512x512, ...). */
void easel_default_params(easel_generate_params* p);
int easel_load(const char* path, easel_pipeline** out);
/* Writes width*height*3 RGB bytes into rgb_out (caller allocates). */
int easel_generate(easel_pipeline* p, const easel_generate_params* params, uint8_t* rgb_out);
/* SDXL: later easel_generate calls on `base` hand the last steps to `refiner` (NULL = none) from
 * `start` (fraction of the denoising, e.g. 0.8). The refiner must outlive its use by `base`. */
int easel_set_refiner(easel_pipeline* base, easel_pipeline* refiner, float start);
/* ControlNet units for later easel_generate calls on `p` (summed in the order added): `model` a ControlNet
 * file or diffusers folder (checked against p's model), the guide as guide_w*guide_h*3 RGB bytes (any size),
 * strength in [0, 2], start < end fractions of the steps, control_mode 0 balanced / 1 "my prompt is more
 * important" / 2 "ControlNet is more important", resize_mode 0 just resize / 1 crop and resize / 2 resize and
 * fill. easel_clear_controlnets removes them all. */
int easel_add_controlnet(easel_pipeline* p, const char* model, const uint8_t* guide_rgb, int guide_w, int guide_h,
                         float strength, float start, float end, int control_mode, int resize_mode);
int easel_clear_controlnets(easel_pipeline* p);
/* LoRA files for later easel_generate calls on `p`, replacing any set before (n = 0 removes them), each with
 * a UNet and a text-encoder strength (negative allowed; te_strengths NULL = the UNet's); mode 0 auto / 1 merge /
 * 2 bypass (see the README). A failing file leaves the previous LoRAs in place. */
int easel_set_loras(easel_pipeline* p, const char* const* files, const float* unet_strengths,
                    const float* te_strengths, int n, int mode);
void easel_free(easel_pipeline* p);
/* Message of the last failed call on this thread ("" if none). */
const char* easel_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
