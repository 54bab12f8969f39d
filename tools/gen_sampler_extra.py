#!/usr/bin/env python3
"""Extra scheduler references for tests/test_samplers.cpp: configurations the main fixtures
(tools/gen_fixtures.py) do not cover -- every timestep_spacing, steps_offset 0/1, linear betas,
epsilon/v_prediction, karras, final_sigmas_type sigma_min, step counts that hit numpy.arange's
extra element (trailing, 61 steps), and img2img (get_timesteps + set_begin_index + add_noise).

Writes tests/fixtures/schedulers/ref_sampler_extra.safetensors:
  c{K}.timesteps [n'] (float32), c{K}.sigmas [n'+1] (absent for ddim), c{K}.init_noise_sigma [1]
  c{K}.step_{i} [1,4,4,4] for loop cases (fake model 0.3 * x_in + 0.0005 * t, generator seed 99,
      initial noise = first randn([1,4,4,4]) * init_noise_sigma)
  i{K}.noised, i{K}.final [1,4,4,4], i{K}.start [1] (t_start * order) for img2img cases (init latents = first randn,
      noise = second randn, then the loop from the start index; strength in metadata)
  metadata: c{K} / i{K} -> JSON {"sampler", "schedule", "steps", "loop", "config": {...}}

Usage: /work/venv/ref/bin/python tools/gen_sampler_extra.py
(LMSDiscreteScheduler needs scipy: pip install scipy, or put it on PYTHONPATH.)
"""
import json

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler)
from safetensors.torch import save_file

CLS = {"euler": EulerDiscreteScheduler, "euler_a": EulerAncestralDiscreteScheduler,
       "ddim": DDIMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler, "pndm": PNDMScheduler,
       "dpmpp_2m_sde": DPMSolverMultistepScheduler, "heun": HeunDiscreteScheduler,
       "lms": LMSDiscreteScheduler}
BETAS = {"scaled_linear": (0.00085, 0.012), "linear": (0.0001, 0.02)}
SHAPE = [1, 4, 4, 4]


def build(sampler, schedule, cfg):
    kw = dict(cfg)
    if schedule == "karras":
        kw["use_karras_sigmas"] = True
    if sampler == "ddim":
        kw.setdefault("clip_sample", False)
        kw.setdefault("set_alpha_to_one", False)
    if sampler == "pndm":
        kw["skip_prk_steps"] = True
    if sampler == "dpmpp_2m_sde":
        kw["algorithm_type"] = "sde-dpmsolver++"
    return CLS[sampler](**kw)


def fake(x_in, t):
    return 0.3 * x_in + 0.0005 * float(t)


def loop(s, x, g, start=0):
    for t in s.timesteps[start:]:
        x_in = s.scale_model_input(x, t)
        kw = {} if isinstance(s, (PNDMScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler)) else {"generator": g}
        x = s.step(fake(x_in, t), t, x, **kw).prev_sample
        yield x


def main():
    torch.set_num_threads(1)
    out, meta = {}, {}
    cases = []
    for sampler, schedules in [("euler", ["normal", "karras"]), ("euler_a", ["normal"]),
                               ("ddim", ["normal"]), ("dpmpp_2m", ["normal", "karras"]), ("pndm", ["normal"]),
                               ("dpmpp_2m_sde", ["normal", "karras"]), ("heun", ["normal", "karras"]),
                               ("lms", ["normal", "karras"])]:
        for schedule in schedules:
            for spacing in ["leading", "linspace", "trailing"]:
                for beta in ["scaled_linear", "linear"]:
                    for pred in ["epsilon", "v_prediction"]:
                        b0, b1 = BETAS[beta]
                        cfg = dict(beta_start=b0, beta_end=b1, beta_schedule=beta, prediction_type=pred,
                                   timestep_spacing=spacing, steps_offset=1, num_train_timesteps=1000)
                        cases.append((sampler, schedule, cfg, 7, True))
            base = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        num_train_timesteps=1000)
            # steps_offset 0, odd step counts, the arange extra element (trailing 61), sigma_min
            for spacing in ["leading", "linspace", "trailing"]:
                for n in [1, 3, 15, 61]:
                    cases.append((sampler, schedule, dict(base, timestep_spacing=spacing, steps_offset=0), n,
                                  n <= 3))
            if sampler in ("euler", "dpmpp_2m", "dpmpp_2m_sde"):
                for n in [4, 16]:
                    cases.append((sampler, schedule, dict(base, timestep_spacing="linspace", steps_offset=1,
                                                          final_sigmas_type="sigma_min",
                                                          prediction_type="v_prediction"), n, True))
    for k, (sampler, schedule, cfg, n, do_loop) in enumerate(cases):
        s = build(sampler, schedule, cfg)
        s.set_timesteps(n)
        name = f"c{k}"
        meta[name] = json.dumps({"sampler": sampler, "schedule": schedule, "steps": n, "loop": do_loop,
                                 "config": cfg})
        out[name + ".timesteps"] = s.timesteps.to(torch.float32).clone()
        if hasattr(s, "sigmas") and sampler not in ("ddim", "pndm"):
            out[name + ".sigmas"] = s.sigmas.to(torch.float32).clone()
        out[name + ".init_noise_sigma"] = torch.tensor([float(s.init_noise_sigma)], dtype=torch.float32)
        if do_loop:
            g = torch.Generator("cpu").manual_seed(99)
            x = torch.randn(SHAPE, generator=g) * s.init_noise_sigma
            for i, x in enumerate(loop(s, x, g)):
                out[f"{name}.step_{i}"] = x.clone()
    # img2img
    img = []
    for sampler, schedule in [("euler", "normal"), ("euler", "karras"), ("euler_a", "normal"),
                              ("ddim", "normal"), ("dpmpp_2m", "normal"), ("dpmpp_2m", "karras"),
                              ("pndm", "normal"), ("dpmpp_2m_sde", "normal"), ("dpmpp_2m_sde", "karras"),
                              ("heun", "normal"), ("heun", "karras"), ("lms", "normal"), ("lms", "karras")]:
        for strength, n, spacing in [(0.6, 10, "leading"), (0.75, 8, "linspace"), (0.3, 20, "trailing")]:
            img.append((sampler, schedule, strength, n, spacing))
    for k, (sampler, schedule, strength, n, spacing) in enumerate(img):
        cfg = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                   timestep_spacing=spacing, num_train_timesteps=1000,
                   prediction_type="v_prediction" if k % 2 else "epsilon")
        s = build(sampler, schedule, cfg)
        s.set_timesteps(n)
        # StableDiffusionImg2ImgPipeline.get_timesteps
        init_timestep = min(int(n * strength), n)
        t_start = max(n - init_timestep, 0)
        timesteps = s.timesteps[t_start * s.order:]
        if hasattr(s, "set_begin_index"):
            s.set_begin_index(t_start * s.order)
        g = torch.Generator("cpu").manual_seed(99)
        init = torch.randn(SHAPE, generator=g)
        noise = torch.randn(SHAPE, generator=g)
        x = s.add_noise(init, noise, timesteps[:1])
        name = f"i{k}"
        meta[name] = json.dumps({"sampler": sampler, "schedule": schedule, "steps": n, "strength": strength,
                                 "config": cfg})
        out[name + ".start"] = torch.tensor([float(t_start * s.order)])
        out[name + ".noised"] = x.clone()
        for x in loop(s, x, g, t_start * s.order):
            pass
        out[name + ".final"] = x.clone()
    path = "tests/fixtures/schedulers/ref_sampler_extra.safetensors"
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, path, metadata=meta)
    print("wrote", path, len(cases), "schedule cases,", len(img), "img2img cases")


if __name__ == "__main__":
    main()
