// Bad input through the `easel` binary: each case gives one clear message naming the
// problem, exit status 1 (no crash: a signal would give >= 128), and no output file.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common.h"
#include <zlib.h>

#include "io/image.h"
#include "pipeline/params_text.h"

namespace fs = std::filesystem;
using namespace easel;

namespace {

struct CliRun {
  int status;
  std::string err;
};

std::string tmpdir() {
  static std::string d = [] {
    auto p = fs::temp_directory_path() / ("easel-cli-" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

CliRun easel_cli(const std::string& args) {
  std::string errf = tmpdir() + "/stderr.txt";
  std::string cmd = std::string(EASEL_BIN) + "/easel " + args + " 2>" + errf + " >/dev/null";
  int rc = std::system(cmd.c_str());
  std::ifstream f(errf);
  std::string err((std::istreambuf_iterator<char>(f)), {});
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc), err};
}

std::string model() { return test::fixture("sd1/sd1_ldm.safetensors"); }

// Runs `generate` with extra args; expects failure mentioning `needle` and no output file.
void expect_failure(const std::string& extra, const std::string& needle, const std::string& m = model()) {
  std::string out = tmpdir() + "/out.png";
  fs::remove(out);
  CliRun r = easel_cli("generate -m '" + m + "' -p 'a cat' -W 64 -H 64 --steps 2 -o '" + out + "' " + extra);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_FALSE(fs::exists(out)) << "partial output left behind";
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

}  // namespace

TEST(Cli, GarbageCheckpoint) {
  std::string p = tmpdir() + "/garbage.safetensors";
  write_file(p, std::string(4096, '\x7f') + "garbage");
  expect_failure("", "garbage.safetensors", p);
}

TEST(Cli, TruncatedCheckpoint) {
  std::string p = tmpdir() + "/truncated.safetensors";
  std::ifstream in(model(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(bytes.size(), 1000u);
  write_file(p, bytes.substr(0, bytes.size() / 2));
  expect_failure("", "truncated.safetensors", p);
}

TEST(Cli, MissingFile) { expect_failure("", "does-not-exist", tmpdir() + "/does-not-exist.safetensors"); }

TEST(Cli, InitImageNotAnImage) {
  std::string p = tmpdir() + "/notes.png";
  write_file(p, "this is text, not a picture\n");
  expect_failure("-i '" + p + "' --strength 0.5", "notes.png");
}

TEST(Cli, SizeNotMultipleOf8) { expect_failure("-W 65", "multiple of 8"); }
TEST(Cli, ZeroSteps) { expect_failure("--steps 0", "steps"); }
TEST(Cli, TooManySteps) { expect_failure("--steps 100000", "steps"); }
TEST(Cli, BadStrength) { expect_failure("-i '" + test::fixture("sd1/init_image.png") + "' --strength 1.5", "strength"); }
TEST(Cli, UnknownSampler) { expect_failure("--sampler plms", "sampler"); }

TEST(Cli, UnwritableOutput) {
  CliRun r = easel_cli("generate -m '" + model() + "' -p 'a cat' -W 64 -H 64 --steps 2 -o /nonexistent-dir/out.png");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("/nonexistent-dir"), std::string::npos) << r.err;
  // A path whose parent is a regular file.
  std::string f = tmpdir() + "/plainfile";
  write_file(f, "x");
  r = easel_cli("generate -m '" + model() + "' -p 'a cat' -W 64 -H 64 --steps 2 -o '" + f + "/out.png'");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("plainfile"), std::string::npos) << r.err;
}

TEST(Cli, GenerateWritesParameters) {
  std::string out = tmpdir() + "/ok.png";
  fs::remove(out);
  CliRun r = easel_cli("generate -m '" + model() + "' -p 'a cat' -n 'blurry' -W 64 -H 64 --steps 2 --seed 7 -o '" +
                    out + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(fs::exists(out));
  // A1111's "parameters" chunk, parsed back the way A1111's PNG info does.
  std::string params;
  for (auto& [k, v] : read_png_text(out))
    if (k == "parameters") params = v;
  auto kv = parse_a1111_parameters(params);
  EXPECT_EQ(kv["Prompt"], "a cat");
  EXPECT_EQ(kv["Negative prompt"], "blurry");
  EXPECT_EQ(kv["Steps"], "2");
  EXPECT_EQ(kv["Seed"], "7");
  EXPECT_EQ(kv["Size"], "64x64");
  EXPECT_EQ(kv["Sampler"], "Euler a");
  EXPECT_EQ(kv["Model"], "sd1_ldm");
  EXPECT_EQ(kv["Model hash"].size(), 10u);
  Image img = read_image(out, 3);
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 64);
}

TEST(Cli, InfoOnModel) {
  CliRun r = easel_cli("info '" + model() + "'");
  EXPECT_EQ(r.status, 0) << r.err;
}

std::string sdxl() { return test::fixture("sdxl/sdxl_ldm.safetensors"); }

TEST(Cli, SdxlWithSd1Flags) { expect_failure("--family sd1", "sdxl", sdxl()); }
TEST(Cli, RefinerIsNotSdxl) { expect_failure("--refiner '" + model() + "'", "not an SDXL model", sdxl()); }
TEST(Cli, RefinerOnSd1Base) {
  expect_failure("--refiner '" + test::fixture("sdxl/sdxl_refiner_ldm.safetensors") + "'", "needs an SDXL base");
}
TEST(Cli, BadRefinerStart) {
  expect_failure("--refiner '" + test::fixture("sdxl/sdxl_refiner_ldm.safetensors") + "' --refiner-start 1",
                 "refiner start", sdxl());
}
TEST(Cli, BadOriginalSize) { expect_failure("--original-size 12y4", "--original-size", sdxl()); }

TEST(Cli, SdxlRefinerTiledWritesParameters) {
  std::string out = tmpdir() + "/xl.png";
  fs::remove(out);
  CliRun r = easel_cli("generate -m '" + sdxl() + "' --refiner '" + test::fixture("sdxl/sdxl_refiner_ldm.safetensors") +
                       "' --refiner-start 0.6 -p 'a cat' -W 64 -H 64 --steps 4 --sampler euler --vae-tiling --original-size 128x96 -o '" +
                       out + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  std::string params;
  for (auto& [k, v] : read_png_text(out))
    if (k == "parameters") params = v;
  auto kv = parse_a1111_parameters(params);
  EXPECT_EQ(kv["Size"], "64x64");
  EXPECT_EQ(kv["Refiner switch at"], "0.6");
  EXPECT_EQ(kv["Refiner"].rfind("sdxl_refiner_ldm [", 0), 0u) << kv["Refiner"];
  Image img = read_image(out, 3);
  EXPECT_EQ(img.width, 64);
}

TEST(Cli, InfoOnLora) {
  std::string out = tmpdir() + "/info.txt";
  int rc = std::system((std::string(EASEL_BIN) + "/easel info '" + test::fixture("lora/sd1_kohya.safetensors") + "' >'" +
                        out + "' 2>&1")
                           .c_str());
  ASSERT_EQ(rc, 0);
  std::ifstream f(out);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(text.find("kinds: lora (20)"), std::string::npos) << text;
  EXPECT_NE(text.find("ss_network_dim: 4"), std::string::npos) << text;
}

TEST(Cli, LoraBypassAndMerge) {
  const std::string lora = test::fixture("lora/sd1_kohya.safetensors");
  std::string hashes[2];
  int i = 0;
  for (const char* mode : {"bypass", "merge"}) {
    std::string out = tmpdir() + "/lora_" + mode + ".png";
    fs::remove(out);
    CliRun r = easel_cli("generate -m '" + model() + "' -p 'a cat' -W 64 -H 64 --steps 2 --lora '" + lora +
                         ":0.8' --lora-apply " + mode + " -o '" + out + "'");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find(std::string("[") + (mode[0] == 'b' ? "bypass" : "merged") + "]"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("applied"), std::string::npos) << r.err;
    std::string params;
    for (auto& [k, v] : read_png_text(out))
      if (k == "parameters") params = v;
    auto kv = parse_a1111_parameters(params);
    EXPECT_NE(kv["Prompt"].find("<lora:sd1_kohya:0.8>"), std::string::npos) << params;
    hashes[i++] = kv["Lora hashes"];
  }
  EXPECT_FALSE(hashes[0].empty());
  EXPECT_EQ(hashes[0], hashes[1]);
}

TEST(Cli, LoraBadInput) {
  expect_failure("--lora-apply fused --lora '" + test::fixture("lora/sd1_kohya.safetensors") + "'", "--lora-apply");
  expect_failure("--lora '" + test::fixture("lora/bad_truncated.safetensors") + "'", "bad_truncated.safetensors");
  expect_failure("--lora '" + test::fixture("lora/sdxl_kohya.safetensors") + "'", "sdxl");
  expect_failure("--lora-dir '" + test::fixture("lora") + "' -p 'a cat <lora:nosuch:1>'", "no nosuch.safetensors");
}

// A 10000x10000 PNG (header only: the size check runs before any pixel is decoded or allocated).
TEST(Cli, PreprocessHugeImageRefusedUndecoded) {
  auto be32 = [](std::string& s, uint32_t v) {
    for (int i = 3; i >= 0; i--) s += char((v >> (8 * i)) & 0xff);
  };
  std::string ihdr = "IHDR";
  be32(ihdr, 10000), be32(ihdr, 10000);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
  std::string png = "\x89PNG\r\n\x1a\n";
  be32(png, 13);
  png += ihdr;
  be32(png, (uint32_t)crc32(0, (const Bytef*)ihdr.data(), (uInt)ihdr.size()));
  for (const char* tag : {"IDAT", "IEND"}) {  // empty chunks: libpng reads the header up to the first IDAT
    be32(png, 0);
    png += tag;
    be32(png, (uint32_t)crc32(0, (const Bytef*)tag, 4));
  }
  const std::string in = tmpdir() + "/huge.png", out = tmpdir() + "/huge_out.png";
  write_file(in, png);
  CliRun r = easel_cli("preprocess canny '" + in + "' -o '" + out + "'");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("10000x10000"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nothing was decoded"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

TEST(Cli, ControlPreprocessNeedsAnnotatorWeights) {
  const std::string photo = test::fixture("controlnet/guide_a.png");
  expect_failure("--control 'controlnet:" + test::fixture("controlnet/sd1_cn") + ":" + photo +
                     "' --preprocess depth_midas --annotator-dir '" + tmpdir() + "'",
                 "dpt_hybrid-midas-501f0c75.pt not found (searched: " + tmpdir());
}
