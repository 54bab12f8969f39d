// Image I/O, resize, tensor conversions, A1111 infotext and the progress bar.
// References (tests/fixtures/images, tools/gen_image_fixtures.py): what PIL decodes, how PIL
// resizes, what A1111's create_infotext writes.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "io/image.h"
#include "pipeline/params_text.h"
#include "pipeline/progress.h"

namespace fs = std::filesystem;
using namespace easel;
using test::error_of;
using test::ramp;
using test::temp_dir;

namespace {

std::string img(const std::string& rel) { return test::fixture("images/" + rel); }

std::string tmpdir() {
  static std::string d = [] {
    auto p = fs::temp_directory_path() / ("easel-image-" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

Image pattern(int w, int h, int c, unsigned seed = 1) {
  Image im;
  im.width = w, im.height = h, im.channels = c;
  im.pixels.resize((size_t)w * h * c);
  for (size_t i = 0; i < im.pixels.size(); i++) im.pixels[i] = (uint8_t)((i * 37 + seed * 101 + (i * i) % 13) & 0xff);
  return im;
}

// Max |a - b| over all pixels; -1 when the shapes differ.
int max_diff(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height || a.channels != b.channels) return -1;
  int m = 0;
  for (size_t i = 0; i < a.pixels.size(); i++) m = std::max(m, std::abs((int)a.pixels[i] - (int)b.pixels[i]));
  return m;
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

size_t files_in(const std::string& dir) {
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

}  // namespace

// ------------------------------------------------------------------------------- PNG round trips
TEST(ImagePng, RoundTripRgbRgbaGray) {
  for (int c : {1, 3, 4}) {
    Image a = pattern(17, 5, c, c);
    std::string path = tmpdir() + "/rt" + std::to_string(c) + ".png";
    write_png(path, a);
    Image b = read_image(path, 0);
    EXPECT_EQ(max_diff(a, b), 0) << c << " channels";
    EXPECT_EQ(b.channels, c);
  }
}

TEST(ImagePng, OnePixel) {
  Image a = pattern(1, 1, 3);
  std::string path = tmpdir() + "/one.png";
  write_png(path, a, {{"parameters", "x"}});
  EXPECT_EQ(max_diff(read_image(path), a), 0);
  Image p = read_image(img("src_1x1.png"));
  EXPECT_EQ(p.width, 1);
  EXPECT_EQ(max_diff(p, read_image(img("expected/src_1x1.png.rgb.png"))), 0);
}

TEST(ImagePng, OverwritesAtomically) {
  std::string path = tmpdir() + "/over.png";
  write_png(path, pattern(4, 4, 3, 1));
  write_png(path, pattern(5, 3, 3, 2));
  EXPECT_EQ(max_diff(read_image(path), pattern(5, 3, 3, 2)), 0);
}

// Every PNG/JPEG flavour against PIL's convert("RGB"/"RGBA"/"L").
TEST(ImageDecode, MatchesPil) {
  const char* pngs[] = {"src_rgb.png",     "src_rgba.png",        "src_gray.png",  "src_la.png",      "src_1x1.png",
                        "src_palette.png", "src_palette_trns.png", "src_bw1.png",  "src_gray4.png",   "src_rgb16.png",
                        "src_rgba16.png",  "src_interlaced.png"};
  for (const char* f : pngs) {
    SCOPED_TRACE(f);
    EXPECT_EQ(max_diff(read_image(img(f), 3), read_image(img(std::string("expected/") + f + ".rgb.png"), 3)), 0);
    EXPECT_EQ(max_diff(read_image(img(f), 4), read_image(img(std::string("expected/") + f + ".rgba.png"), 4)), 0);
    EXPECT_EQ(max_diff(read_image(img(f), 1), read_image(img(std::string("expected/") + f + ".l.png"), 1)), 0);
  }
  // JPEG: libjpeg-turbo versions may round the IDCT/upsampling differently: allow +-2.
  const char* jpgs[] = {"src_photo.jpg", "src_photo444.jpg", "src_progressive.jpg", "src_gray.jpg", "src_cmyk.jpg", "src_odd.jpg"};
  for (const char* f : jpgs) {
    SCOPED_TRACE(f);
    Image ours = read_image(img(f), 3), pil = read_image(img(std::string("expected/") + f + ".rgb.png"), 3);
    int d = max_diff(ours, pil);
    EXPECT_GE(d, 0);
    EXPECT_LE(d, 2);
    std::printf("  %s: max |ours - PIL| = %d\n", f, d);
    EXPECT_LE(max_diff(read_image(img(f), 1), read_image(img(std::string("expected/") + f + ".l.png"), 1)), 2);
  }
}

// EXIF orientation 1..8 (JPEG APP1 and PNG eXIf) as ImageOps.exif_transpose.
TEST(ImageDecode, ExifOrientation) {
  for (int o = 1; o <= 8; o++)
    for (const char* ext : {"jpg", "png"}) {
      std::string f = "exif/orient" + std::to_string(o) + "." + ext;
      Image ours = read_image(img(f)), pil = read_image(img(f + ".rgb.png"));
      EXPECT_EQ(max_diff(ours, pil), 0) << f;
      EXPECT_EQ(ours.width, o >= 5 ? 5 : 7) << f;
      Image raw = read_image(img(f), 3, false);  // as stored
      EXPECT_EQ(raw.width, 7) << f;
      if (o >= 2 && o <= 4) {
        EXPECT_GT(max_diff(raw, ours), 0) << f;
      }
    }
}

TEST(ImageDecode, AsStoredChannels) {
  EXPECT_EQ(read_image(img("src_gray.png"), 0).channels, 1);
  EXPECT_EQ(read_image(img("src_la.png"), 0).channels, 4);
  EXPECT_EQ(read_image(img("src_palette.png"), 0).channels, 3);
  EXPECT_EQ(read_image(img("src_palette_trns.png"), 0).channels, 4);
  EXPECT_EQ(read_image(img("src_rgba16.png"), 0).channels, 4);
  EXPECT_EQ(read_image(img("src_gray.jpg"), 0).channels, 1);
  EXPECT_EQ(read_image(img("src_photo.jpg"), 0).channels, 3);
}

// 16-bit gray keeps the high byte (PIL would clip to 255; see image.h).
TEST(ImageDecode, Gray16HighByte) {
  std::ifstream f(img("expected/src_gray16.values.txt"));
  Image g = read_image(img("src_gray16.png"), 1);
  ASSERT_EQ(g.width * g.height, 12);
  for (int i = 0; i < 12; i++) {
    int v;
    f >> v;
    EXPECT_EQ(g.pixels[i], v >> 8) << i;
  }
}

TEST(ImageDecode, SniffsContentNotExtension) {
  std::string path = tmpdir() + "/really_a_jpeg.png";
  fs::copy_file(img("src_photo.jpg"), path, fs::copy_options::overwrite_existing);
  EXPECT_EQ(max_diff(read_image(path), read_image(img("src_photo.jpg"))), 0);
}

// ------------------------------------------------------------------------------------ bad input
TEST(ImageErrors, BadFiles) {
  auto err = [](const std::string& f) { return error_of([&] { read_image(img(f)); }); };
  EXPECT_TRUE(contains(err("bad_notimage.png"), "bad_notimage.png: not a PNG or JPEG image")) << err("bad_notimage.png");
  EXPECT_TRUE(contains(err("bad_webp.png"), "not a PNG or JPEG image (looks like WebP)")) << err("bad_webp.png");
  EXPECT_TRUE(contains(err("bad_truncated.png"), "bad_truncated.png: corrupt PNG data (libpng: ")) << err("bad_truncated.png");
  EXPECT_TRUE(contains(err("bad_crc.png"), "corrupt PNG data (libpng: ")) << err("bad_crc.png");
  EXPECT_TRUE(contains(err("bad_truncated.jpg"), "bad_truncated.jpg: truncated JPEG data")) << err("bad_truncated.jpg");
  EXPECT_TRUE(contains(err("bad_huge.png"), "image 100000x100000 is too large")) << err("bad_huge.png");
  EXPECT_TRUE(contains(err("bad_toomany.png"), "image 20000x20000 is too large")) << err("bad_toomany.png");
  EXPECT_TRUE(contains(err("bad_bomb.png"), "bytes cannot hold a 16000x16000 image")) << err("bad_bomb.png");
  EXPECT_TRUE(contains(err("does_not_exist.png"), "cannot open: No such file or directory")) << err("does_not_exist.png");
  EXPECT_TRUE(contains(error_of([] { read_image(tmpdir()); }), "not a regular file"));
  std::string empty = tmpdir() + "/empty.png";
  std::ofstream(empty).close();
  EXPECT_TRUE(contains(error_of([&] { read_image(empty); }), "not a PNG or JPEG image"));
}

// Every prefix of a PNG and a JPEG fails cleanly (or decodes): no crash, no leak under ASan.
TEST(ImageErrors, EveryTruncation) {
  for (const char* f : {"src_rgba.png", "src_progressive.jpg"}) {
    std::ifstream in(img(f), std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    int failures = 0;
    for (size_t n = 0; n < bytes.size(); n += 1 + n / 64) {
      try {
        decode_image(bytes.data(), n, f);
      } catch (const Error& e) {
        failures++;
      }
    }
    EXPECT_GT(failures, 10) << f;
    // And random byte flips.
    for (int k = 0; k < 200; k++) {
      auto b = bytes;
      b[(k * 7919) % b.size()] ^= (uint8_t)(k * 31 + 1);
      b[(k * 104729) % b.size()] ^= 0x55;
      try {
        decode_image(b.data(), b.size(), f);
      } catch (const Error&) {
      }
    }
  }
}

TEST(ImageErrors, UnwritablePathsLeaveNoFile) {
  Image a = pattern(8, 8, 3);
  std::string e = error_of([&] { write_png("/nonexistent/dir/out.png", a); });
  EXPECT_TRUE(contains(e, "[image] /nonexistent/dir/out.png: cannot write: No such file or directory")) << e;
  EXPECT_FALSE(fs::exists("/nonexistent/dir/out.png"));
  // A read-only place: root ignores directory permissions, so use /proc there.
  std::string ro;
  if (::geteuid() == 0) {
    ro = "/proc/easel_out.png";
  } else {
    std::string dir = tmpdir() + "/readonly";
    fs::create_directories(dir);
    fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
    ro = dir + "/out.png";
  }
  e = error_of([&] { write_png(ro, a); });
  EXPECT_TRUE(contains(e, ro + ": cannot write: ")) << e;
  EXPECT_FALSE(fs::exists(ro));
  // A directory in the way: the temporary file is removed again.
  std::string dir = tmpdir() + "/isdir.png";
  fs::create_directories(dir);
  size_t before = files_in(tmpdir());
  e = error_of([&] { write_png(dir, a); });
  EXPECT_TRUE(contains(e, "cannot write: Is a directory")) << e;
  EXPECT_EQ(files_in(tmpdir()), before);
  EXPECT_TRUE(contains(error_of([&] { write_png(tmpdir() + "/bad.png", Image{2, 2, 3, {1, 2, 3}}); }), "pixel buffer size"));
}

// A full disk, simulated with a file size limit (EFBIG instead of ENOSPC, same code path): the
// error names the cause, no partial file is left, and an existing file is kept intact.
TEST(ImageErrors, WriteFailureMidFile) {
  std::string dir = tmpdir() + "/limited";
  fs::create_directories(dir);
  std::string path = dir + "/out.png";
  Image small = pattern(2, 2, 3), big = pattern(300, 300, 3);
  uint32_t x = 12345;  // incompressible pixels
  for (auto& v : big.pixels) v = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
  write_png(path, small);
  signal(SIGXFSZ, SIG_IGN);
  rlimit old;
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit lim = old;
  lim.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string e = error_of([&] { write_png(path, big); });
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_TRUE(contains(e, path + ": cannot write: File too large")) << e;
  EXPECT_EQ(files_in(dir), 1u);
  EXPECT_EQ(max_diff(read_image(path), small), 0);
}

// ------------------------------------------------------------------------------------ text chunks
TEST(ImageText, RoundTripIncludingNonAscii) {
  TextChunks t = {{"parameters", "a cat, (masterpiece:1.2)\nNegative prompt: x\nSteps: 20"},
                  {"latin1", "café déjà vu"},
                  {"unicode", "猫 🐱 ✓"},
                  {"empty", ""}};
  std::string path = tmpdir() + "/text.png";
  write_png(path, pattern(3, 2, 3), t);
  EXPECT_EQ(read_png_text(path), t);
  // Latin-1 values are stored as tEXt with Latin-1 bytes (as PIL does), others as iTXt in UTF-8.
  std::ifstream in(path, std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), {});
  EXPECT_TRUE(contains(raw, std::string("tEXtlatin1\0caf\xe9 d\xe9j\xe0 vu", 23)));
  EXPECT_TRUE(contains(raw, std::string("iTXtunicode\0\0\0\0\0\xe7\x8c\xab", 19)));
  EXPECT_TRUE(contains(error_of([&] { write_png(path, pattern(1, 1, 3), {{"", "x"}}); }), "invalid PNG text key"));
}

TEST(ImageText, ReadsWhatPilWrites) {
  TextChunks t = read_png_text(img("text_pil.png"));
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0], (std::pair<std::string, std::string>{"parameters", "café, 1girl\nNegative prompt: bad\nSteps: 20"}));
  EXPECT_EQ(t[1], (std::pair<std::string, std::string>{"unicode", "猫 cat ✓"}));
  std::string z, zi;
  for (int i = 0; i < 20; i++) z += "compressed ", zi += "圧縮 ";
  EXPECT_EQ(t[2], (std::pair<std::string, std::string>{"ztxt", z}));
  EXPECT_EQ(t[3], (std::pair<std::string, std::string>{"zitxt", zi}));
}

// ------------------------------------------------------------------------------------------ resize
TEST(ImageResize, BitExactWithPil) {
  const char* filters[] = {"nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"};
  const int sizes[][2] = {{16, 10}, {64, 48}, {37, 9}, {11, 23}, {53, 23}, {1, 1}, {30, 5}, {45, 8}};
  int worst = 0, n = 0;
  for (const char* src : {"src_resize", "src_resize_rgba", "src_resize_l"}) {
    Image in = read_image(img(std::string(src) + ".png"), 0);
    for (const char* f : filters)
      for (auto& s : sizes) {
        std::string ref = "resize/" + std::string(src) + "_" + f + "_" + std::to_string(s[0]) + "x" + std::to_string(s[1]) + ".png";
        Image ours = resize_image(in, s[0], s[1], parse_resize_filter(f));
        int d = max_diff(ours, read_image(img(ref), 0));
        EXPECT_EQ(d, 0) << ref;
        worst = std::max(worst, d);
        n++;
      }
  }
  std::printf("  %d resizes, max |ours - PIL| = %d\n", n, worst);
  EXPECT_TRUE(contains(error_of([] { parse_resize_filter("cubic"); }), "unknown resize filter"));
}

// A1111's img2img resize modes (just resize / crop and resize / resize and fill).
TEST(ImageResize, A1111ModesBitExact) {
  int worst = 0, n = 0;
  for (const char* src : {"src_resize", "src_resize_tall"}) {
    Image in = read_image(img(std::string(src) + ".png"), 3);
    for (int mode : {0, 1, 2})
      for (auto [w, h] : {std::pair{64, 64}, {20, 40}, {80, 30}, {37, 23}, {8, 8}}) {
        std::string ref = "resize_a1111/" + std::string(src) + "_m" + std::to_string(mode) + "_" + std::to_string(w) + "x" +
                          std::to_string(h) + ".png";
        int d = max_diff(resize_a1111(in, w, h, mode), read_image(img(ref), 3));
        EXPECT_EQ(d, 0) << ref;
        worst = std::max(worst, d);
        n++;
      }
  }
  std::printf("  %d A1111 resizes, max |ours - A1111| = %d\n", n, worst);
}

// -------------------------------------------------------------------------------------- tensors
TEST(ImageTensor, DiffusersPreprocessAndPostprocess) {
  Image a = pattern(5, 3, 3);
  Tensor t = image_to_tensor(a);  // [1, 3, 3, 5]
  ASSERT_EQ(t.shape(), (Shape{1, 3, 3, 5}));
  // pixel (y=1, x=2), channel 1
  uint8_t v = a.pixels[(1 * 5 + 2) * 3 + 1];
  EXPECT_EQ(t.f32()[1 * 15 + 1 * 5 + 2], 2.0f * ((float)v / 255.0f) - 1.0f);
  EXPECT_EQ(max_diff(tensor_to_image(t), a), 0);
  Tensor t01 = image_to_tensor01(a);
  EXPECT_EQ(t01.f32()[1 * 15 + 1 * 5 + 2], (float)v / 255.0f);
  EXPECT_EQ(max_diff(tensor01_to_image(t01), a), 0);
  // Rounding: half to even as numpy, clamping, NaN -> 0.
  Tensor r = Tensor::from_vector({0.5f / 255.0f, 1.5f / 255.0f, 2.5f / 255.0f, -0.2f, 1.7f, NAN, 0.1f, 0.9f, 0.50196f}, {1, 3, 1, 3});
  Image ri = tensor01_to_image(r);
  std::vector<uint8_t> expect;
  for (int i = 0; i < 3; i++)  // HWC order of the CHW values above
    for (int c = 0; c < 3; c++) {
      float x = r.f32()[c * 3 + i];
      x = std::isnan(x) ? 0.0f : std::min(std::max(x, 0.0f), 1.0f) * 255.0f;
      expect.push_back((uint8_t)std::nearbyint(x));
    }
  EXPECT_EQ(ri.pixels, expect);
  EXPECT_EQ(ri.pixels[0], 0);    // 0.5 -> 0
  EXPECT_EQ(ri.pixels[3], 2);    // 1.5 -> 2
  EXPECT_EQ(ri.pixels[6], 2);    // 2.5 -> 2
  EXPECT_EQ(ri.pixels[7], 0);    // NaN
  EXPECT_EQ(ri.pixels[1], 0);    // -0.2
  EXPECT_EQ(ri.pixels[4], 255);  // 1.7
  EXPECT_TRUE(contains(error_of([] { tensor01_to_image(Tensor::zeros({1, 4, 2, 2})); }), "expected a [B, 3, H, W]"));
}

// ---------------------------------------------------------------------------------------- infotext
TEST(Infotext, MatchesA1111ByteForByte) {
  std::ifstream f(img("infotext.json"));
  auto cases = nlohmann::json::parse(f);
  ASSERT_GE(cases.size(), 4u);
  for (auto& c : cases) {
    auto& in = c["input"];
    GenParams p;
    p.prompt = in["prompt"];
    p.negative_prompt = in["negative_prompt"];
    p.steps = in["steps"];
    p.sampler = in["sampler"];
    p.scheduler = in["scheduler"];
    p.cfg_scale = in["cfg_scale"].get<float>();
    p.seed = in["seed"].get<uint64_t>();
    p.width = in["width"];
    p.height = in["height"];
    p.model_name = in["model_name"];
    p.model_hash = in["model_hash"];
    if (in.contains("denoising_strength")) p.denoising_strength = in["denoising_strength"].get<float>();
    p.clip_skip = in["clip_skip"];
    p.rng = in["rng"];
    p.version = in["version"];
    if (in.contains("extra"))
      for (auto& e : in["extra"]) p.extra.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    std::string expected = c["expected"];
    EXPECT_EQ(a1111_parameters(p), expected);

    // Parse back: the same parameters (prompt whitespace stripped as A1111 strips it).
    GenParams q = gen_params_from_a1111(expected);
    q.version = p.version;
    std::string stripped = q.prompt;
    q.prompt = p.prompt;  // A1111 strips each prompt line when parsing; the rest must re-render exactly
    EXPECT_EQ(a1111_parameters(q), expected);
    if (p.prompt.front() != ' ') {
      EXPECT_EQ(stripped, p.prompt);
    }
    EXPECT_EQ(q.negative_prompt, p.negative_prompt);
    EXPECT_EQ(q.steps, p.steps);
    auto base = [](const std::string& s) { return s.rfind("k_", 0) == 0 ? s.substr(2) : s; };
    EXPECT_EQ(base(q.sampler), base(p.sampler));  // A1111 names parse to the k-diffusion ports where they exist
    EXPECT_EQ(q.scheduler, p.scheduler);
    EXPECT_EQ(q.cfg_scale, p.cfg_scale);
    EXPECT_EQ(q.seed, p.seed);
    EXPECT_EQ(q.model_name, p.model_name);
    EXPECT_EQ(q.denoising_strength, p.denoising_strength);
    EXPECT_EQ(q.rng == "philox", p.rng == "philox");
    EXPECT_EQ(q.extra, p.extra);
  }
}

TEST(Infotext, ParsesA1111Texts) {
  // From A1111's own docstring (pre-1.9 format, no Schedule type).
  std::string t =
      "girl with an artist's beret, determined, blue eyes\nNegative prompt: ugly, fat, (((deformed)))\n"
      "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b";
  auto m = parse_a1111_parameters(t);
  EXPECT_EQ(m["Prompt"], "girl with an artist's beret, determined, blue eyes");
  EXPECT_EQ(m["Negative prompt"], "ugly, fat, (((deformed)))");
  EXPECT_EQ(m["Seed"], "965400086");
  EXPECT_EQ(m["Model hash"], "45dee52b");
  GenParams p = gen_params_from_a1111(t);
  EXPECT_EQ(p.sampler, "k_euler_a");
  EXPECT_EQ(p.scheduler, "normal");
  EXPECT_EQ(p.width, 512);
  EXPECT_EQ(p.rng, "philox");  // no RNG: A1111's GPU default
  EXPECT_EQ(p.clip_skip, 1);
  // Old combined names and A1111 1.10's "Automatic" (Karras for DPM++ 2M).
  EXPECT_EQ(gen_params_from_a1111("x\nSteps: 5, Sampler: DPM++ 2M Karras, CFG scale: 7").scheduler, "karras");
  EXPECT_EQ(gen_params_from_a1111("x\nSteps: 5, Sampler: DPM++ 2M, Schedule type: Automatic, Seed: 3").scheduler, "karras");
  EXPECT_EQ(gen_params_from_a1111("x\nSteps: 5, Sampler: DPM++ 2M, Schedule type: Uniform, Seed: 3").scheduler, "normal");
  // Fewer than 3 pairs: the last line is part of the prompt.
  auto m2 = parse_a1111_parameters("a: b, c: d");
  EXPECT_EQ(m2["Prompt"], "a: b, c: d");
  EXPECT_EQ(m2.count("a"), 0u);
  EXPECT_TRUE(contains(error_of([] { gen_params_from_a1111("x\nSteps: many, Sampler: Euler, Seed: 1"); }), "'Steps: many' is not an integer"));
  EXPECT_TRUE(contains(error_of([] { gen_params_from_a1111("x\nSteps: 2, Sampler: Euler, Seed: 1, RNG: Quantum"); }), "RNG"));
}

TEST(Infotext, Numbers) {
  EXPECT_EQ(a1111_number(7), "7");
  EXPECT_EQ(a1111_number(7.5f), "7.5");
  EXPECT_EQ(a1111_number(0.3f), "0.3");
  EXPECT_EQ(a1111_number(0.75f), "0.75");
  EXPECT_EQ(a1111_number(0.1f), "0.1");
  EXPECT_EQ(json_quote("a\"b\\c\n\x01 猫"), "\"a\\\"b\\\\c\\n\\u0001 猫\"");
}

// AutoV2 hash: known SHA-256 vectors.
TEST(Infotext, ModelHash) {
  std::string p = tmpdir() + "/hash.bin";
  std::ofstream(p, std::ios::binary) << "abc";
  EXPECT_EQ(sha256_file(p), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(a1111_model_hash(p), "ba7816bf8f");
  {
    std::ofstream big(p, std::ios::binary);
    std::string mb(1 << 20, 'a');
    for (int i = 0; i < 3; i++) big << mb;  // crosses the 1 MiB read blocks
  }
  EXPECT_EQ(sha256_file(p).size(), 64u);
  EXPECT_NE(sha256_file(p), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::ofstream(p, std::ios::binary).close();
  EXPECT_EQ(sha256_file(p), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_TRUE(contains(error_of([] { sha256_file("/nonexistent.safetensors"); }), "cannot open"));
}

// --------------------------------------------------------------------------------------- progress
TEST(Progress, FormatAndDraw) {
  EXPECT_EQ(Progress::format("sampling", 12, 20, 14.76, 12), "sampling  12/20 [#######.....] 1.23 s/it, ETA 9.8 s");
  EXPECT_EQ(Progress::format("sampling", 0, 20, 0.0, 4), "sampling   0/20 [....]");
  EXPECT_EQ(Progress::format("vae", 4, 4, 1.0, 4), "vae  4/4 [####] 4.00 it/s, 1.0 s");
  std::FILE* f = std::tmpfile();
  {
    Progress p("steps", 3, 1, f);
    auto cb = p.callback();
    cb(1, 3);
    cb(3, 3);
  }  // destructor ends the line
  std::rewind(f);
  char buf[512] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string out(buf, n);
  EXPECT_EQ(out.front(), '\r');
  EXPECT_EQ(out.back(), '\n');
  EXPECT_TRUE(contains(out, "steps  3/3 [")) << out;
  std::FILE* g = std::tmpfile();
  {
    Progress quiet("x", 3, 0, g);
    quiet.update(1);
    quiet.finish();
  }
  EXPECT_EQ(std::ftell(g), 0);
  std::fclose(g);
}
