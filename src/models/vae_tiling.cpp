// Tiled VAE decode/encode; see vae_tiling.h for the reference and the scheme.
#include "models/vae_tiling.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace easel {

namespace {

// Tile geometry in the units of one side (input: what is cut, output: what is blended and cropped).
struct Plan {
  int64_t tile;    // input tile size (latents for decode, pixels for encode)
  int64_t stride;  // input stride between tiles: int(tile * (1 - overlap))
  int64_t blend;   // output blend extent: int(out_tile * overlap)
  int64_t limit;   // output rows/columns kept per tile: out_tile - blend (== stride * scale)
};

struct Geometry {
  int64_t f, tile_px, tile_lat;
  Plan decode, encode;
};

Geometry geometry(const VAEConfig& cfg, const VAETiling& opt) {
  Geometry g;
  g.f = cfg.downscale();
  g.tile_px = opt.tile_px ? opt.tile_px : cfg.sample_size;
  g.tile_lat = g.tile_px / g.f;
  double o = opt.overlap;
  // Python: int(size * factor) truncates a double product; so do these casts.
  g.decode = {g.tile_lat, (int64_t)(g.tile_lat * (1 - o)), (int64_t)(g.tile_px * o), 0};
  g.decode.limit = g.tile_px - g.decode.blend;
  g.encode = {g.tile_px, (int64_t)(g.tile_px * (1 - o)), (int64_t)(g.tile_lat * o), 0};
  g.encode.limit = g.tile_lat - g.encode.blend;
  return g;
}

bool consistent(const Geometry& g) {
  return g.decode.stride * g.f == g.decode.limit && g.encode.stride == g.encode.limit * g.f;
}

// x[:, :, y0:y0+h, x0:x0+w] with Python's clamping at the end -> [B, C, h', w'].
Tensor crop(const Tensor& x, int64_t y0, int64_t x0, int64_t h, int64_t w) {
  int64_t N = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  h = std::min(h, H - y0);
  w = std::min(w, W - x0);
  Tensor out = Tensor::empty({x.size(0), x.size(1), h, w});
  const float* s = x.f32();
  float* d = out.f32();
  for (int64_t n = 0; n < N; n++)
    for (int64_t y = 0; y < h; y++)
      std::copy_n(s + (n * H + y0 + y) * W + x0, w, d + (n * h + y) * w);
  return out;
}

// out[:, :, y0:y0+h, x0:x0+w] = t[:, :, :h, :w].
void paste(Tensor& out, const Tensor& t, int64_t y0, int64_t x0, int64_t h, int64_t w) {
  int64_t N = out.size(0) * out.size(1), H = out.size(2), W = out.size(3), th = t.size(2), tw = t.size(3);
  if (y0 + h > H || x0 + w > W) fail("vae", "tiling: tile outside the output (internal error)");
  const float* s = t.f32();
  float* d = out.f32();
  for (int64_t n = 0; n < N; n++)
    for (int64_t y = 0; y < h; y++) std::copy_n(s + (n * th + y) * tw, w, d + (n * H + y0 + y) * W + x0);
}

// diffusers blend_v / blend_h: b's first e rows (columns) become a's last e ones * (1 - k/e) + b's * (k/e),
// e = min(a's size, b's size, extent). `a_rows`/`a_cols` is a's size along that axis (for blend_v, `a`
// may hold only its last min(extent, a's height) rows). Weights are rounded to f32 as torch does.
void blend_v(const Tensor& a, int64_t a_rows, Tensor& b, int64_t extent) {
  int64_t e = std::min({a_rows, b.size(2), extent});
  int64_t N = b.size(0) * b.size(1), ah = a.size(2), bh = b.size(2), w = b.size(3);
  const float* pa = a.f32();
  float* pb = b.f32();
  for (int64_t y = 0; y < e; y++) {
    float wa = (float)(1.0 - (double)y / e), wb = (float)((double)y / e);
    for (int64_t n = 0; n < N; n++) {
      const float* ra = pa + (n * ah + ah - e + y) * w;
      float* rb = pb + (n * bh + y) * w;
      for (int64_t x = 0; x < w; x++) rb[x] = ra[x] * wa + rb[x] * wb;
    }
  }
}

void blend_h(const Tensor& a, Tensor& b, int64_t extent) {
  int64_t e = std::min({a.size(3), b.size(3), extent});
  int64_t rows = b.size(0) * b.size(1) * b.size(2), aw = a.size(3), bw = b.size(3);
  const float* pa = a.f32();
  float* pb = b.f32();
  for (int64_t x = 0; x < e; x++) {
    float wa = (float)(1.0 - (double)x / e), wb = (float)((double)x / e);
    for (int64_t r = 0; r < rows; r++) pb[r * bw + x] = pa[r * aw + aw - e + x] * wa + pb[r * bw + x] * wb;
  }
}

// The loop shared by tiled_decode and _tiled_encode. x [B, C, H, W]; `run` maps an input tile to its
// output tile; the result is [B, out_c, out_h, out_w].
Tensor run_tiled(const Tensor& x, const Plan& p, int64_t out_c, int64_t out_h, int64_t out_w,
                 const std::function<Tensor(const Tensor&)>& run) {
  const int64_t H = x.size(2), W = x.size(3);
  Tensor out = Tensor::empty({x.size(0), out_c, out_h, out_w});
  std::vector<Tensor> above;        // previous row's tiles: their last min(blend, height) rows
  std::vector<int64_t> above_rows;  // and their full heights
  int64_t oy = 0;
  for (int64_t i = 0; i < H; i += p.stride) {
    std::vector<Tensor> below;
    std::vector<int64_t> below_rows;
    Tensor left;
    int64_t ox = 0, kept_h = 0;
    for (int64_t j = 0, col = 0; j < W; j += p.stride, col++) {
      Tensor t = run(crop(x, i, j, p.tile, p.tile)).to(DType::F32);  // [B, out_c, th, tw]
      if (i > 0) blend_v(above[col], above_rows[col], t, p.blend);
      if (j > 0) blend_h(left, t, p.blend);
      int64_t th = t.size(2), tw = t.size(3), kh = std::min(p.limit, th), kw = std::min(p.limit, tw);
      paste(out, t, oy, ox, kh, kw);
      ox += kw;
      kept_h = kh;
      int64_t keep = std::min(p.blend, th);
      below.push_back(keep == th ? t : crop(t, th - keep, 0, keep, tw));
      below_rows.push_back(th);
      left = std::move(t);
    }
    if (ox != out_w) fail("vae", "tiling: row width " + std::to_string(ox) + " != " + std::to_string(out_w));
    oy += kept_h;
    above = std::move(below);
    above_rows = std::move(below_rows);
  }
  if (oy != out_h) fail("vae", "tiling: height " + std::to_string(oy) + " != " + std::to_string(out_h));
  return out;
}

}  // namespace

void check_vae_tiling(const VAEConfig& cfg, const VAETiling& opt) {
  auto bad = [&](const std::string& m) { fail("vae", "tiling: " + m); };
  if (!(opt.overlap >= 0 && opt.overlap < 0.5))
    bad("overlap " + std::to_string(opt.overlap) + " is outside [0, 0.5)");
  Geometry g = geometry(cfg, opt);
  std::string tile = "tile " + std::to_string(g.tile_px) + " px";
  if (g.tile_px <= 0 || g.tile_px % g.f) bad(tile + " is not a positive multiple of " + std::to_string(g.f));
  if (g.tile_lat < 4) bad(tile + " is smaller than 4 latents (" + std::to_string(4 * g.f) + " px)");
  if (consistent(g)) return;
  std::string hint;  // nearest valid tile sizes below and above
  for (int dir : {-1, 1})
    for (int64_t t = g.tile_lat + dir; t >= 4 && t <= g.tile_lat + 1024; t += dir) {
      VAETiling o2 = opt;
      o2.tile_px = (int)(t * g.f);
      if (consistent(geometry(cfg, o2))) {
        hint += (hint.empty() ? "" : " or ") + std::to_string(o2.tile_px) + " px";
        break;
      }
    }
  bad(tile + " with overlap " + std::to_string(opt.overlap) + ": the tile stride (" +
      std::to_string(g.decode.stride * g.f) + " px) differs from the cropped tile (" +
      std::to_string(g.decode.limit) + " px), so diffusers' tiles would not add up to the image" +
      (hint.empty() ? "" : "; try " + hint));
}

Tensor vae_decode_tiled(const AutoencoderKL& vae, const Tensor& z, const VAETiling& opt) {
  check_vae_tiling(vae.config, opt);
  Geometry g = geometry(vae.config, opt);
  // Not 4-D (decode throws its shape error) or no larger than one tile: untiled, as diffusers.
  if (z.dim() != 4 || (z.size(2) <= g.tile_lat && z.size(3) <= g.tile_lat)) return vae.decode(z);
  Tensor zf = z.to(DType::F32);
  return run_tiled(zf, g.decode, vae.config.out_channels, z.size(2) * g.f, z.size(3) * g.f,
                   [&](const Tensor& t) { return vae.decode(t); });
}

Tensor vae_encode_moments_tiled(const AutoencoderKL& vae, const Tensor& image, const VAETiling& opt) {
  check_vae_tiling(vae.config, opt);
  Geometry g = geometry(vae.config, opt);
  // Bad shapes go to encode_moments for its error; inputs within one tile run untiled, as diffusers.
  if (image.dim() != 4 || image.size(2) % g.f || image.size(3) % g.f ||
      (image.size(2) <= g.tile_px && image.size(3) <= g.tile_px))
    return vae.encode_moments(image);
  Tensor x = image.to(DType::F32);
  return run_tiled(x, g.encode, 2 * vae.config.latent_channels, image.size(2) / g.f, image.size(3) / g.f,
                   [&](const Tensor& t) { return vae.encode_moments(t); });
}

}  // namespace easel
