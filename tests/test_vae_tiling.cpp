// Tiled VAE decode/encode against diffusers' enable_tiling() (tools/fixtures/vae_tiling.py:
// tests/fixtures/vae_tiling/): a tiny VAE with sample_size 32 (4-latent tiles), an 11x13 latent and an
// 88x104 image (several tiles both ways, partial last tiles), at 32 px and 64 px tiles.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "models/vae_tiling.h"

using namespace easel;

namespace {

// Same tolerance reasoning as test_vae.cpp (fp32, accumulation order only); the blends add one
// multiply-add per element.
constexpr float kAtol = 1e-4f, kRtol = 1e-4f;

::testing::AssertionResult close(const Tensor& a, const Tensor& ref) {
  return test::allclose(a, ref, kAtol * std::max(1.0f, test::max_abs(ref)), kRtol);
}

// tools/fixtures/vae_tiling.py CONFIG.
VAEConfig tiny_config() {
  VAEConfig c;
  c.block_out_channels = {32, 32, 32, 32};
  c.layers_per_block = 1;
  c.norm_num_groups = 8;
  c.sample_size = 32;
  return c;
}

struct Fixture {
  WeightStore ref = test::load_ref("vae_tiling/ref_tiling.safetensors");
  AutoencoderKL vae;
  Tensor z, image;
  Fixture() {
    WeightStore w = test::load_ref("vae_tiling/vae.safetensors");
    vae.load(w, tiny_config());
    EXPECT_TRUE(w.unused().empty());
    z = ref.get("latent").to(DType::F32);      // [1, 4, 11, 13]
    image = ref.get("image").to(DType::F32);   // [1, 3, 88, 104]
  }
};

Fixture& fx() {
  static Fixture f;
  return f;
}

// x[:, :, y0:y0+h, x0:x0+w]
Tensor crop(const Tensor& x, int64_t y0, int64_t x0, int64_t h, int64_t w) {
  Tensor out = Tensor::empty({x.size(0), x.size(1), h, w});
  for (int64_t n = 0; n < x.size(0) * x.size(1); n++)
    for (int64_t y = 0; y < h; y++)
      for (int64_t i = 0; i < w; i++)
        out.f32()[(n * h + y) * w + i] = x.f32()[(n * x.size(2) + y0 + y) * x.size(3) + x0 + i];
  return out;
}

bool identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(VAETiling, UntiledMatchesDiffusers) {  // the weights/config are loaded right
  auto& f = fx();
  EXPECT_TRUE(close(f.vae.decode(f.z), f.ref.get("decoded")));
  EXPECT_TRUE(close(f.vae.encode_moments(f.image), f.ref.get("moments")));
}

TEST(VAETiling, MatchesDiffusersTiled) {
  auto& f = fx();
  for (int tile_px : {0, 32, 64}) {  // 0 = config.sample_size = 32
    std::string sfx = tile_px == 64 ? "_t64" : "";
    VAETiling opt;
    opt.tile_px = tile_px;
    Tensor dec = vae_decode_tiled(f.vae, f.z, opt);  // [1, 3, 88, 104]
    auto rd = close(dec, f.ref.get("decoded_tiled" + sfx));
    EXPECT_TRUE(rd) << "decode, tile " << tile_px;
    Tensor mom = vae_encode_moments_tiled(f.vae, f.image, opt);  // [1, 8, 11, 13]
    auto rm = close(mom, f.ref.get("moments_tiled" + sfx));
    EXPECT_TRUE(rm) << "encode, tile " << tile_px;
    std::printf("tile %d: decode %s; encode %s\n", tile_px, rd.message(), rm.message());
  }
}

// Our tiled-vs-untiled difference is diffusers' own (the seams are no worse): measured with this
// random tiny VAE (whose 4-latent tiles see little context, hence the large values):
//   decode 32 px: max 2.432, mean 0.3818 (untiled max |x| 3.215); 64 px: max 1.805, mean 0.2107
//   encode 32 px: max 1.963, mean 0.2935 (untiled max |x| 1.815); 64 px: max 0.8055, mean 0.1331
TEST(VAETiling, SeamsLikeDiffusers) {
  auto& f = fx();
  auto stats = [](const Tensor& a, const Tensor& b, double& mx, double& mean) {
    auto av = a.to_vector(), bv = b.to_vector();
    mx = mean = 0;
    for (size_t i = 0; i < av.size(); i++) {
      double d = std::fabs((double)av[i] - bv[i]);
      mx = std::max(mx, d);
      mean += d / av.size();
    }
  };
  Tensor dec = f.vae.decode(f.z), mom = f.vae.encode_moments(f.image);
  for (int tile_px : {32, 64}) {
    std::string sfx = tile_px == 64 ? "_t64" : "";
    VAETiling opt;
    opt.tile_px = tile_px;
    struct Case {
      const char* name;
      Tensor ours, ours_untiled, ref, ref_untiled;
    } cases[] = {{"decode", vae_decode_tiled(f.vae, f.z, opt), dec, f.ref.get("decoded_tiled" + sfx),
                  f.ref.get("decoded")},
                 {"encode", vae_encode_moments_tiled(f.vae, f.image, opt), mom, f.ref.get("moments_tiled" + sfx),
                  f.ref.get("moments")}};
    for (auto& c : cases) {
      double m1, a1, m2, a2;
      stats(c.ours, c.ours_untiled, m1, a1);
      stats(c.ref, c.ref_untiled, m2, a2);
      std::printf("%s tile %d: tiled vs untiled max %.4g mean %.4g; diffusers max %.4g mean %.4g\n", c.name,
                  tile_px, m1, a1, m2, a2);
      EXPECT_GT(m2, 0.1) << "tiling had no effect in the reference";
      EXPECT_NEAR(m1, m2, 1e-3 * m2) << c.name << " " << tile_px;
      EXPECT_NEAR(a1, a2, 1e-3 * a2) << c.name << " " << tile_px;
    }
  }
}

TEST(VAETiling, OneTileOrLessIsUntiled) {
  auto& f = fx();
  for (auto [h, w] : {std::pair{4, 4}, {3, 4}, {4, 2}}) {
    Tensor z = crop(f.z, 1, 2, h, w);
    EXPECT_TRUE(identical(vae_decode_tiled(f.vae, z), f.vae.decode(z))) << h << "x" << w;
  }
  Tensor img = crop(f.image, 8, 16, 32, 24);
  EXPECT_TRUE(identical(vae_encode_moments_tiled(f.vae, img), f.vae.encode_moments(img)));
  // One latent / 8 px more than a tile: tiled (4-latent tiles on a 4x5 latent differ from untiled).
  Tensor z5 = crop(f.z, 0, 0, 4, 5);
  EXPECT_GT(test::max_abs(ops::add(vae_decode_tiled(f.vae, z5), ops::scale(f.vae.decode(z5), -1))), 1e-3);
  // A bigger tile than the input: untiled.
  VAETiling big;
  big.tile_px = 128;
  EXPECT_TRUE(identical(vae_decode_tiled(f.vae, f.z, big), f.vae.decode(f.z)));
}

TEST(VAETiling, NoOverlapIsConcatenatedTiles) {  // overlap 0: stride = tile, no blending
  auto& f = fx();
  VAETiling opt;
  opt.overlap = 0;
  Tensor dec = vae_decode_tiled(f.vae, f.z, opt);  // [1, 3, 88, 104]
  for (auto [i, j] : {std::pair{0, 0}, {1, 2}, {2, 3}}) {  // tile (i, j) covers latents [4i, 4i+4) x [4j, 4j+4)
    int64_t h = std::min<int64_t>(4, 11 - 4 * i), w = std::min<int64_t>(4, 13 - 4 * j);
    Tensor t = f.vae.decode(crop(f.z, 4 * i, 4 * j, h, w));
    EXPECT_TRUE(identical(crop(dec, 32 * i, 32 * j, 8 * h, 8 * w), t)) << i << "," << j;
  }
}

TEST(VAETiling, BatchIsPerSample) {
  auto& f = fx();
  Tensor z2 = ops::concat({f.z, ops::scale(f.z, -0.5f)}, 0);  // [2, 4, 11, 13]
  Tensor both = vae_decode_tiled(f.vae, z2);
  EXPECT_TRUE(close(both.slice0(0, 1), f.ref.get("decoded_tiled")));
  EXPECT_TRUE(close(both.slice0(1, 1), vae_decode_tiled(f.vae, ops::scale(f.z, -0.5f))));
}

TEST(VAETiling, RejectsBadOptions) {
  auto& f = fx();
  Tensor small = crop(f.z, 0, 0, 2, 2);  // options are checked even when no tiling happens
  auto expect_error = [&](VAETiling opt, const std::string& what) {
    try {
      vae_decode_tiled(f.vae, small, opt);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error({0, -0.1}, "outside [0, 0.5)");
  expect_error({0, 0.5}, "outside [0, 0.5)");
  expect_error({0, std::nan("")}, "outside [0, 0.5)");
  expect_error({36, 0.25}, "not a positive multiple of 8");
  expect_error({-32, 0.25}, "not a positive multiple of 8");
  expect_error({24, 0.25}, "smaller than 4 latents");
  expect_error({40, 0.25}, "try 32 px or 64 px");  // stride 24 px vs crop 30 px
  EXPECT_THROW(check_vae_tiling(f.vae.config, {48, 0.25}), Error);
  EXPECT_NO_THROW(check_vae_tiling(f.vae.config, {512, 0.25}));
  EXPECT_NO_THROW(check_vae_tiling(f.vae.config, {1024, 0.25}));
  EXPECT_NO_THROW(check_vae_tiling(f.vae.config, {256, 0.0}));
  // Bad inputs still get the VAE's own errors.
  EXPECT_THROW(vae_decode_tiled(f.vae, Tensor::zeros({1, 3, 16, 16})), Error);
  EXPECT_THROW(vae_encode_moments_tiled(f.vae, Tensor::zeros({1, 3, 60, 64})), Error);
}

// Peak memory / time of a full-size decode (not a test; run one configuration per process):
//   EASEL_VAE_BENCH=/tmp/vae.safetensors (diffusers keys, SD VAE config) EASEL_VAE_BENCH_LATENT=128
//   EASEL_VAE_BENCH_TILE=512 (px; 0 = untiled) [EASEL_VAE_BENCH_REPEAT=n] OMP_NUM_THREADS=2 \
//   test_vae_tiling --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_Bench*'
TEST(VAETiling, DISABLED_BenchFullSizeDecode) {
  const char* path = std::getenv("EASEL_VAE_BENCH");
  if (!path) GTEST_SKIP() << "EASEL_VAE_BENCH not set";
  auto env_int = [](const char* k, int d) { return std::getenv(k) ? std::atoi(std::getenv(k)) : d; };
  int lat = env_int("EASEL_VAE_BENCH_LATENT", 128), tile = env_int("EASEL_VAE_BENCH_TILE", 0);
  WeightStore w = load_weights(path);
  AutoencoderKL vae;
  vae.load(w, VAEConfig{});  // SD1/SD2 VAE, sample_size 512
  std::vector<float> v((size_t)4 * lat * lat);
  for (size_t i = 0; i < v.size(); i++) v[i] = std::sin(0.37f * i) * 2.0f;
  Tensor z = Tensor::from_vector(v, {1, 4, lat, lat});
  auto usage = [](double& rss_mib, double& cpu_s) {
    rusage u;
    getrusage(RUSAGE_SELF, &u);
    rss_mib = u.ru_maxrss / 1024.0;
    cpu_s = u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  VAETiling opt;
  opt.tile_px = tile;
  for (int rep = env_int("EASEL_VAE_BENCH_REPEAT", 1); rep > 0; rep--) {
    double rss0, cpu0, rss1, cpu1;
    usage(rss0, cpu0);
    auto t0 = std::chrono::steady_clock::now();
    Tensor img = tile ? vae_decode_tiled(vae, z, opt) : vae.decode(z);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    usage(rss1, cpu1);
    std::printf("decode %dx%d latent (%s): %.1f s wall, %.1f s CPU, peak RSS %.0f MiB (%.0f MiB before, "
                "packed weights %.0f MiB), out %s\n",
                lat, lat, tile ? ("tile " + std::to_string(tile) + " px").c_str() : "untiled", s, cpu1 - cpu0, rss1,
                rss0, ops::weight_cache_bytes() / 1048576.0, img.str().c_str());
  }
}

}  // namespace
