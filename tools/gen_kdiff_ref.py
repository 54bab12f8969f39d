#!/usr/bin/env python3
"""References for easel's k-diffusion samplers (k_euler, k_euler_a, k_dpmpp_2m, k_heun, k_lms; A1111's
samplers)
-> tests/fixtures/schedulers/ref_kdiff.safetensors.

Runs k-diffusion's own sampling.py / external.py (pip package k-diffusion 0.1.1, installed with
--no-deps; its heavy optional imports are stubbed) on a DiscreteEpsDDPMDenoiser (what A1111's
CompVisDenoiser is) over the LDM schedule (ldm/models/diffusion/ddpm.py register_schedule: float64
betas and cumprod, float32 buffer). Fake UNet: eps = 0.3 * x_in + 0.0005 * t. Noise: a CPU
torch.Generator seeded 99 (initial noise, then the ancestral draws).

Keys: k{K}.sigmas [n+1], k{K}.timesteps [n] (sigma_to_t), k{K}.step_{i} [1,4,4,4] (x after each
full step; Heun's two evaluations count as one step); metadata k{K} =
JSON {sampler, schedule, steps, beta_schedule, beta_start, beta_end, prediction_type}
(epsilon models use DiscreteEpsDDPMDenoiser, v_prediction DiscreteVDDPMDenoiser).
img2img (A1111 sample_img2img): j{K}.start [1], j{K}.noised, j{K}.final [1,4,4,4]; metadata j{K} =
JSON {sampler, schedule, steps, strength}; init latents = first randn, noise = second randn.
(sample_lms needs scipy.)
Usage: PYTHONPATH=<dir with k_diffusion and scipy> /work/venv/ref/bin/python tools/gen_kdiff_ref.py
"""
import importlib.util
import json
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file


def load_kdiffusion():
    for name in ("torchdiffeq", "torchsde"):  # only needed by samplers we do not use
        mod = types.ModuleType(name)
        mod.odeint = None
        sys.modules[name] = mod
    spec = importlib.util.find_spec("k_diffusion")
    root = spec.submodule_search_locations[0]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [root]
    sys.modules["k_diffusion"] = pkg
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    sys.modules["k_diffusion.utils"] = utils
    pkg.utils = utils
    mods = {}
    for name in ("sampling", "external"):
        s = importlib.util.spec_from_file_location(f"k_diffusion.{name}", f"{root}/{name}.py")
        m = importlib.util.module_from_spec(s)
        sys.modules[f"k_diffusion.{name}"] = m
        setattr(pkg, name, m)
        s.loader.exec_module(m)
        mods[name] = m
    return mods["sampling"], mods["external"]


def ldm_alphas_cumprod(beta_schedule, b0, b1, n=1000):
    if beta_schedule == "scaled_linear":  # LDM "linear"
        betas = (torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64) ** 2).numpy()
    else:
        betas = torch.linspace(b0, b1, n, dtype=torch.float64).numpy()
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


class FakeUNet(torch.nn.Module):
    def forward(self, x_in, t):
        return 0.3 * x_in + 0.0005 * t[:, None, None, None]


def main():
    torch.set_num_threads(1)
    sampling, external = load_kdiffusion()
    fns = {"k_euler": sampling.sample_euler, "k_euler_a": sampling.sample_euler_ancestral,
           "k_dpmpp_2m": sampling.sample_dpmpp_2m, "k_heun": sampling.sample_heun, "k_lms": sampling.sample_lms}
    out, meta, k = {}, {}, 0
    for beta_schedule, (b0, b1), pred in [("scaled_linear", (0.00085, 0.012), "epsilon"),
                                          ("linear", (0.0001, 0.02), "epsilon"),
                                          ("scaled_linear", (0.00085, 0.012), "v_prediction")]:
        cls = external.DiscreteEpsDDPMDenoiser if pred == "epsilon" else external.DiscreteVDDPMDenoiser
        model = cls(FakeUNet(), ldm_alphas_cumprod(beta_schedule, b0, b1), False)
        for sampler, fn in fns.items():
            for schedule in ["normal", "karras"]:
                for n in [1, 2, 7, 20]:
                    if schedule == "normal":
                        sigmas = model.get_sigmas(n)
                    else:
                        sigmas = sampling.get_sigmas_karras(n, model.sigma_min.item(), model.sigma_max.item())
                    g = torch.Generator("cpu").manual_seed(99)
                    kw = {}
                    if sampler == "k_euler_a":
                        kw["noise_sampler"] = lambda s, sn: torch.randn([1, 4, 4, 4], generator=g)
                    xs = []  # the callback sees x before each step
                    x = torch.randn([1, 4, 4, 4], generator=g) * sigmas[0]
                    final = fn(model, x, sigmas, disable=True, callback=lambda d: xs.append(d["x"].clone()), **kw)
                    steps = xs[1:] + [final]
                    name = f"k{k}"
                    meta[name] = json.dumps({"sampler": sampler, "schedule": schedule, "steps": n,
                                             "beta_schedule": beta_schedule, "beta_start": b0, "beta_end": b1,
                                             "prediction_type": pred})
                    out[name + ".sigmas"] = sigmas.to(torch.float32).clone()
                    out[name + ".timesteps"] = model.sigma_to_t(sigmas[:-1]).to(torch.float32).clone()
                    for i, s in enumerate(steps):
                        out[f"{name}.step_{i}"] = s.clone()
                    k += 1
    # img2img as A1111's KDiffusionSampler.sample_img2img (img2img_fix_steps off)
    model = external.DiscreteEpsDDPMDenoiser(FakeUNet(), ldm_alphas_cumprod("scaled_linear", 0.00085, 0.012), False)
    j = 0
    for sampler, fn in fns.items():
        for schedule in ["normal", "karras"]:
            for strength, steps in [(0.6, 10), (0.75, 20), (1.0, 8)]:
                sigmas = model.get_sigmas(steps) if schedule == "normal" else sampling.get_sigmas_karras(
                    steps, model.sigma_min.item(), model.sigma_max.item())
                t_enc = int(min(strength, 0.999) * steps)
                start = steps - t_enc - 1
                sigma_sched = sigmas[start:]
                g = torch.Generator("cpu").manual_seed(99)
                init = torch.randn([1, 4, 4, 4], generator=g)
                noise = torch.randn([1, 4, 4, 4], generator=g)
                xi = init + noise * sigma_sched[0]
                kw = {}
                if sampler == "k_euler_a":
                    kw["noise_sampler"] = lambda s, sn: torch.randn([1, 4, 4, 4], generator=g)
                final = fn(model, xi, sigma_sched, disable=True, **kw)
                name = f"j{j}"
                meta[name] = json.dumps({"sampler": sampler, "schedule": schedule, "steps": steps,
                                         "strength": strength})
                out[name + ".start"] = torch.tensor([float(start)])
                out[name + ".noised"] = xi.clone()
                out[name + ".final"] = final.clone()
                j += 1
    path = "tests/fixtures/schedulers/ref_kdiff.safetensors"
    save_file({key: v.contiguous() for key, v in sorted(out.items())}, path, metadata=meta)
    print("wrote", path, k, "cases")


if __name__ == "__main__":
    main()
