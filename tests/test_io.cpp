// io tests: safetensors round trips and validation, torch zip checkpoints vs what torch.save wrote
// (fixtures from tools/gen_io_fixtures.py), the restricted pickle VM, and load_weights' sniffing.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/torch_zip.h"

using namespace easel;
using easel::test::fixture;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;

struct TempDir {
  fs::path dir;
  TempDir() {
    dir = fs::temp_directory_path() / ("easel_test_io_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& f) const { return (dir / f).string(); }
};

Bytes read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}
void write_file(const std::string& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary);
  f.write((const char*)b.data(), (std::streamsize)b.size());
}
// A safetensors image from a header string and a data section (no padding).
Bytes st_image(const std::string& header, const Bytes& data) {
  Bytes b(8);
  uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}
// The Error message of parsing `b` as safetensors ("" when it parses).
std::string st_error(const Bytes& b) {
  try {
    parse_safetensors(b.data(), b.size(), nullptr, "t.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
std::string load_error(const std::string& path) {
  try {
    load_weights(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}
Tensor ramp(const Shape& s, DType t, float scale) {
  Tensor f = Tensor::empty(s);
  for (int64_t i = 0; i < f.numel(); ++i) f.f32()[i] = scale * (float)(i + 1) * (i % 2 ? -1.f : 1.f);
  return f.to(t);
}

#define EXPECT_HAS(msg, needle) EXPECT_NE(std::string(msg).find(needle), std::string::npos) << (msg)

}  // namespace

// ---------------------------------------------------------------------------------------------
// safetensors

TEST(Safetensors, RoundTripKeepsDtypesAndMetadata) {
  TempDir tmp;
  std::map<std::string, Tensor> m;
  m["f32"] = ramp({2, 3}, DType::F32, 0.37f);
  m["f16"] = ramp({4, 1}, DType::F16, 0.5f);
  m["bf16"] = ramp({3}, DType::BF16, 1.25f);
  Tensor i64 = Tensor::empty({3}, DType::I64);
  i64.data<int64_t>()[0] = -5, i64.data<int64_t>()[1] = 1ll << 40, i64.data<int64_t>()[2] = 7;
  m["i64"] = i64;
  Tensor i32 = Tensor::empty({2}, DType::I32);
  i32.data<int32_t>()[0] = -3, i32.data<int32_t>()[1] = 9;
  m["i32"] = i32;
  Tensor u8 = Tensor::empty({3}, DType::U8);
  u8.data<uint8_t>()[0] = 0, u8.data<uint8_t>()[1] = 200, u8.data<uint8_t>()[2] = 13;
  m["u8"] = u8;
  m["scalar"] = ramp({}, DType::F32, 2.5f);
  m["empty"] = Tensor::empty({0, 4});
  save_safetensors(tmp / "a.safetensors", m, {{"format", "pt"}, {"note", "x y"}});
  WeightStore w = load_weights(tmp / "a.safetensors");
  ASSERT_EQ(w.tensors.size(), m.size());
  for (auto& [k, t] : m) {
    ASSERT_TRUE(w.has(k)) << k;
    EXPECT_TRUE(same_bytes(w.get(k), t)) << k << " " << w.get(k).str() << " vs " << t.str();
  }
  EXPECT_EQ(w.get("f16").dtype(), DType::F16);  // kept compact, not widened
  EXPECT_EQ(w.get("bf16").dtype(), DType::BF16);
  EXPECT_EQ(w.metadata.at("format"), "pt");
  EXPECT_EQ(w.metadata.at("note"), "x y");
  EXPECT_EQ(w.source, tmp / "a.safetensors");
  // No temp file left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(tmp.dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, TensorsAreViewsIntoTheImage) {
  TempDir tmp;
  save_safetensors(tmp / "v.safetensors", {{"a", ramp({8}, DType::F32, 1)}, {"b", ramp({5}, DType::F16, 1)}});
  Bytes b = read_file(tmp / "v.safetensors");
  WeightStore w = parse_safetensors(b.data(), b.size(), nullptr, "v");
  for (auto& [k, t] : w.tensors) {
    auto p = (const uint8_t*)t.raw();
    EXPECT_TRUE(p >= b.data() && p + t.nbytes() <= b.data() + b.size()) << k << " was copied";
  }
}

TEST(Safetensors, UnalignedDataIsCopiedAligned) {
  // Header of odd length: the f32 data starts at an odd address.
  std::string h = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"U8","shape":[1],"data_offsets":[8,9]}})";
  if ((h.size() + 8) % 2 == 0) h += " ";
  float v[2] = {1.5f, -2.25f};
  Bytes data(9);
  std::memcpy(data.data(), v, 8);
  data[8] = 42;
  Bytes b = st_image(h, data);
  WeightStore w = parse_safetensors(b.data(), b.size(), nullptr, "u");
  const Tensor& x = w.get("x", {2});
  EXPECT_EQ((uintptr_t)x.raw() % 4, 0u);
  EXPECT_EQ(x.f32()[0], 1.5f);
  EXPECT_EQ(x.f32()[1], -2.25f);
  EXPECT_EQ(w.get("y").data<uint8_t>()[0], 42);
}

TEST(Safetensors, ReadsFileWrittenByPython) {
  WeightStore w = load_weights(fixture("io/py.safetensors"));
  EXPECT_EQ(w.get("a", {2, 3}).dtype(), DType::F32);
  EXPECT_EQ(w.get("b", {5}).dtype(), DType::F16);
  EXPECT_EQ(w.get("c", {4, 1}).dtype(), DType::BF16);
  const Tensor& d = w.get("d", {3});
  ASSERT_EQ(d.dtype(), DType::I64);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(d.data<int64_t>()[i], i);
  EXPECT_EQ(w.metadata.at("author"), "gen_io_fixtures");
}

TEST(Safetensors, ValidationErrors) {
  const std::string ok = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  Bytes d8(8, 1);
  EXPECT_EQ(st_error(st_image(ok, d8)), "");
  // Truncated: data section one byte short.
  EXPECT_HAS(st_error(st_image(ok, Bytes(7, 1))), "tensor 'x' extends past end of file");
  // Header length larger than the file / absurdly large / file shorter than 8 bytes.
  Bytes b = st_image(ok, d8);
  uint64_t big = b.size();
  std::memcpy(b.data(), &big, 8);
  EXPECT_HAS(st_error(b), "extends past end of file");
  big = 1ull << 40;
  std::memcpy(b.data(), &big, 8);
  EXPECT_HAS(st_error(b), "implausibly large");
  EXPECT_HAS(st_error(Bytes{1, 2, 3}), "too small");
  // Bad JSON, JSON that is not an object, too deeply nested.
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32",)", d8)), "not valid JSON");
  EXPECT_HAS(st_error(st_image("[1,2]", d8)), "not a JSON object");
  EXPECT_HAS(st_error(st_image(std::string(50, '[') + std::string(50, ']'), d8)), "nested too deeply");
  // Entry fields: missing, wrong types, unsupported dtype.
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[2]}})", d8)), "tensor 'x': entry needs");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", d8)),
             "unsupported dtype \"F64\"");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", d8)), "unsupported dtype");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8)), "negative");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", d8)), "non-integer");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", d8)), "shape must be");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", d8)), "data_offsets");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", d8)), "data_offsets");
  EXPECT_HAS(st_error(st_image(R"({"x":[1]})", d8)), "entry needs");
  // Offsets: reversed, past the end, size not matching the shape.
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", d8)), "begin > end");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", d8)),
             "extends past end of file");
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8)),
             "8 bytes stored for shape [3] of F32 (12 expected)");
  // numel overflow: 2^32 * 2^32 elements.
  EXPECT_HAS(st_error(st_image(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", d8)),
             "implausibly large");
  EXPECT_HAS(st_error(st_image(R"({"__metadata__":[1]})", d8)), "__metadata__");
}

TEST(Safetensors, DiskFullLeavesTheOldFile) {
  // RLIMIT_FSIZE makes writes past 4 KiB fail (EFBIG), as a full disk would.
  TempDir tmp;
  std::string p = tmp / "big.safetensors";
  save_safetensors(p, {{"old", ramp({4}, DType::F32, 1)}});
  Bytes before = read_file(p);
  struct rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string msg;
  try {
    save_safetensors(p, {{"new", ramp({100000}, DType::F32, 1)}});
  } catch (const Error& e) {
    msg = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_HAS(msg, "[safetensors] " + p + ": cannot write: File too large");
  EXPECT_EQ(read_file(p), before);  // the old file is untouched
  int files = 0;
  for (auto& e : fs::directory_iterator(tmp.dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);  // no temp file left
}

TEST(Safetensors, WriteErrorsNameTheFile) {
  TempDir tmp;
  std::string p = tmp / "no/such/dir/x.safetensors";
  try {
    save_safetensors(p, {{"a", ramp({2}, DType::F32, 1)}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "[safetensors] " + p + ": cannot write");
  }
  EXPECT_THROW(save_safetensors(tmp / "m.safetensors", {{"__metadata__", ramp({2}, DType::F32, 1)}}), Error);
}

// ---------------------------------------------------------------------------------------------
// load_weights: sniffing and file errors

TEST(LoadWeights, FileErrors) {
  TempDir tmp;
  EXPECT_HAS(load_error(tmp / "missing.safetensors"), "cannot open");
  EXPECT_HAS(load_error(tmp.dir.string()), "is a directory");
  write_file(tmp / "empty.ckpt", {});
  EXPECT_HAS(load_error(tmp / "empty.ckpt"), "file is empty");
  write_file(tmp / "garbage.safetensors", Bytes{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
  EXPECT_HAS(load_error(tmp / "garbage.safetensors"), "not a checkpoint");
  // Content, not the name, picks the reader: a torch zip named .safetensors loads.
  fs::copy_file(fixture("io/flat.pt"), tmp / "really_a_zip.safetensors");
  EXPECT_TRUE(load_weights(tmp / "really_a_zip.safetensors").has("0.weight"));
  // Truncated safetensors and truncated zip.
  Bytes st = read_file(fixture("io/py.safetensors"));
  st.resize(st.size() - 3);
  write_file(tmp / "trunc.safetensors", st);
  EXPECT_HAS(load_error(tmp / "trunc.safetensors"), "extends past end of file");
  Bytes z = read_file(fixture("io/nested.ckpt"));
  z.resize(z.size() / 2);
  write_file(tmp / "trunc.ckpt", z);
  EXPECT_HAS(load_error(tmp / "trunc.ckpt"), "[ckpt]");
}

// ---------------------------------------------------------------------------------------------
// torch zip checkpoints

// Every tensor in `got` equals the reference (same key set, dtype, shape and bytes).
void expect_matches_ref(const WeightStore& got, const std::string& ref_rel) {
  WeightStore ref = load_weights(fixture(ref_rel));
  ASSERT_EQ(got.tensors.size(), ref.tensors.size());
  for (auto& [k, r] : ref.tensors) {
    ASSERT_TRUE(got.has(k)) << k;
    const Tensor& t = got.get(k);
    EXPECT_TRUE(same_bytes(t, r)) << k << ": " << t.str() << " vs " << r.str();
  }
}

TEST(TorchCkpt, NestedStateDictMatchesTorch) {
  WeightStore w = load_weights(fixture("io/nested.ckpt"));
  expect_matches_ref(w, "io/nested_ref.safetensors");
  EXPECT_EQ(w.get("model.w_f16").dtype(), DType::F16);
  EXPECT_EQ(w.get("model.w_bf16").dtype(), DType::BF16);
  EXPECT_EQ(w.get("model.i64").dtype(), DType::I64);
  EXPECT_EQ(w.get("model.bool").dtype(), DType::U8);
  EXPECT_EQ(w.get("model.f64").dtype(), DType::F32);
  EXPECT_EQ(w.get("model.cols").shape(), (Shape{4, 3}));
  // Contiguous views share the storage (no copy): rows = big[1:3].
  EXPECT_EQ((const float*)w.get("model.rows").raw(), (const float*)w.get("model.big").raw() + 6);
  EXPECT_EQ(w.metadata.at("epoch"), "3");
  EXPECT_EQ(w.metadata.at("global_step"), "100");
  EXPECT_EQ(w.metadata.at("name"), "tiny");
}

TEST(TorchCkpt, ModuleStateDictFlatAndUnderModel) {
  WeightStore flat = load_weights(fixture("io/flat.pt"));  // OrderedDict with _metadata (BUILD)
  expect_matches_ref(flat, "io/flat_ref.safetensors");
  WeightStore under = load_weights(fixture("io/model_key.pth"));  // {'model': sd, 'optimizer': {...}}
  expect_matches_ref(under, "io/flat_ref.safetensors");
}

TEST(TorchCkpt, LightningExtrasAreSkipped) {
  // numpy scalars/arrays, a set, optimizer states with tensors and callback state around state_dict.
  WeightStore w = load_weights(fixture("io/lightning.ckpt"));
  expect_matches_ref(w, "io/flat_ref.safetensors");
  EXPECT_EQ(w.metadata.at("epoch"), "7");
  EXPECT_EQ(w.metadata.at("pytorch-lightning_version"), "1.9.0");
}

TEST(TorchCkpt, LegacyFormatRefused) {
  EXPECT_HAS(load_error(fixture("io/legacy.pt")), "legacy torch format");
}

TEST(TorchCkpt, MaliciousPickleRefusedAndNothingRuns) {
  std::remove("/tmp/easel_pwned");
  std::string e = load_error(fixture("io/malicious.pt"));
  EXPECT_HAS(e, "refusing to load");
  EXPECT_HAS(e, "'posix.system'");
  EXPECT_FALSE(fs::exists("/tmp/easel_pwned"));
  EXPECT_HAS(load_error(fixture("io/malicious_eval.pt")), "'builtins.eval'");
}

// ---------------------------------------------------------------------------------------------
// pickle VM on hand-written streams

namespace {

std::string unpickle_error(const std::string& pkl) {
  StorageLoader none = [](const std::string& k, size_t) -> TorchStorage { fail("test", "no storage " + k); };
  try {
    unpickle_state_dict((const uint8_t*)pkl.data(), pkl.size(), none, "p.pkl");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// BINUNICODE opcode with its 4-byte length.
std::string U(const std::string& s) {
  uint32_t n = (uint32_t)s.size();
  return "X" + std::string((const char*)&n, 4) + s;
}
std::string K(int v) { return "K" + std::string(1, (char)v); }  // BININT1

// data.pkl for {'w': tensor(storage '0' of `st`, offset, size, stride)} in protocol 2.
std::string tensor_pickle(const std::string& st, int numel, int offset, std::vector<int> size, std::vector<int> stride) {
  std::string p = "\x80\x02}(" + U("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + U("storage") + "ctorch\n" + st +
                  "\n" + U("0") + U("cpu") + K(numel) + "tQ" + K(offset) + "(";
  for (int s : size) p += K(s);
  p += "t(";
  for (int s : stride) p += K(s);
  p += "t\x89)tRu.";
  return p;
}

}  // namespace

TEST(Pickle, MalformedStreamsGiveErrors) {
  EXPECT_HAS(unpickle_error(""), "without STOP");
  EXPECT_HAS(unpickle_error("\x80\x02}"), "without STOP");
  EXPECT_HAS(unpickle_error("\x80\x02."), "empty stack");
  EXPECT_HAS(unpickle_error("\x80\x02K\x01."), "no dict of tensors");
  EXPECT_HAS(unpickle_error("\x80\x02h\x05."), "memo key 5 undefined");
  EXPECT_HAS(unpickle_error("\x80\x02X\xff\xff\xff\x7f"), "truncated");
  EXPECT_HAS(unpickle_error("\x80\x02t."), "MARK missing");
  EXPECT_HAS(unpickle_error("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09."), "wider than 64 bits");
  EXPECT_HAS(unpickle_error("\x80\x02I1\n."), "unsupported pickle opcode 0x49");
  EXPECT_HAS(unpickle_error("\x80\x02K\x01K\x02K\x03s."), "SETITEM on a non-dict");
  EXPECT_HAS(unpickle_error("\x80\x02" "cos\nsystem\n" + U("ls") + "\x85R."), "refusing to load: the pickle references 'os.system'");
  EXPECT_HAS(unpickle_error("\x80\x02" "ctorch\nFloatStorage\n)R."), "not callable");
  // A dict containing itself flattens without looping forever.
  EXPECT_EQ(unpickle_error(std::string("\x80\x02}q") + '\0' + U("a") + "h" + '\0' + "s."), "");
}

TEST(Pickle, StridedViewAndBounds) {
  // 2x3 storage [0..5] as f32; view size (3,2) stride (1,3) = transpose.
  float vals[6] = {0, 1, 2, 3, 4, 5};
  int loads = 0;
  StorageLoader load = [&](const std::string& key, size_t nbytes) {
    EXPECT_EQ(key, "0");
    ++loads;
    auto buf = std::make_shared<std::vector<float>>(vals, vals + 6);
    TorchStorage s;
    s.data = (const uint8_t*)buf->data();
    s.nbytes = 24;
    s.owner = buf;
    return s;
  };
  std::string p = tensor_pickle("FloatStorage", 6, 0, {3, 2}, {1, 3});
  WeightStore w = unpickle_state_dict((const uint8_t*)p.data(), p.size(), load, "t.pkl");
  const Tensor& t = w.get("w", {3, 2});
  float expect[6] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.f32()[i], expect[i]) << i;
  EXPECT_EQ(loads, 1);
  // Offset 2 with size 5 runs past a 6-element storage.
  p = tensor_pickle("FloatStorage", 6, 2, {5}, {1});
  try {
    unpickle_state_dict((const uint8_t*)p.data(), p.size(), load, "t.pkl");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "tensor 'w': view (offset 2, size [5]) exceeds its storage of 6 elements");
  }
  p = tensor_pickle("ShortStorage", 6, 0, {6}, {1});
  EXPECT_HAS(unpickle_error(p), "storage type 'torch.ShortStorage' is not supported");
}

TEST(Pickle, StrideExtentWrapping64BitsIsRefused) {
  // size 2^24+1 with stride 2^40: (size-1)*stride = 2^64 wraps to 0 in 64-bit arithmetic, so a
  // naive bound check passes and the gather reads far past the storage (fuzz regression seed).
  auto long1 = [](uint64_t v) {
    std::string b;
    while (v) b += (char)(v & 0xff), v >>= 8;
    b += '\0';  // sign byte
    return "\x8a" + std::string(1, (char)b.size()) + b;
  };
  std::string p = "\x80\x02}(" + U("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + U("storage") +
                  "ctorch\nFloatStorage\n" + U("0") + U("cpu") + long1(1u << 18) + "tQ" + K(0) +
                  long1((1u << 24) + 1) + "\x85" + long1(1ull << 40) + "\x85\x89Nt" + "Ru.";
  StorageLoader load = [](const std::string&, size_t nbytes) {
    auto buf = std::make_shared<std::vector<uint8_t>>(nbytes);
    TorchStorage s;
    s.data = buf->data();
    s.nbytes = nbytes;
    s.owner = buf;
    return s;
  };
  try {
    unpickle_state_dict((const uint8_t*)p.data(), p.size(), load, "wrap.pkl");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "wrap.pkl");
    EXPECT_HAS(e.what(), "tensor 'w'");
  }
}

TEST(TorchCkpt, RealLdmVaeCheckpointEqualsSafetensors) {
  // sd1_vae_ldm.ckpt holds the sd1 VAE in LDM keys as FLOAT16, the same values as the
  // first_stage_model.* tensors of sd1_ldm.safetensors (tests/fixtures/README.md): bit-exact.
  WeightStore ck = load_weights(fixture("sd1/sd1_vae_ldm.ckpt"));
  WeightStore st = load_weights(fixture("sd1/sd1_ldm.safetensors"));
  auto keys = st.keys_with_prefix("first_stage_model.");
  ASSERT_GT(keys.size(), 100u);
  EXPECT_EQ(ck.keys_with_prefix("first_stage_model.").size(), keys.size());
  for (auto& k : keys) {
    ASSERT_TRUE(ck.has(k)) << k;
    const Tensor &a = ck.get(k), &b = st.get(k);
    EXPECT_EQ(a.dtype(), DType::F16) << k;
    EXPECT_TRUE(same_bytes(a, b.to(DType::F16))) << k << " " << a.str() << " vs " << b.str();
  }
  EXPECT_EQ(ck.get("betas", {1000}).dtype(), DType::F32);
  const Tensor& ids = ck.get("cond_stage_model.transformer.text_model.embeddings.position_ids", {1, 77});
  ASSERT_EQ(ids.dtype(), DType::I64);
  for (int i = 0; i < 77; ++i) EXPECT_EQ(ids.data<int64_t>()[i], i);
  EXPECT_EQ(ck.metadata.at("global_step"), "470000");
}

TEST(TorchCkpt, StoredEntriesAreViewedInPlaceWithAnOwner) {
  Bytes img = read_file(fixture("io/nested.ckpt"));
  auto owner = std::make_shared<Bytes>(img);
  const uint8_t* d = owner->data();
  auto inside = [&](const Tensor& t) {
    auto* p = static_cast<const uint8_t*>(t.raw());
    return p >= d && p + t.nbytes() <= d + owner->size();
  };
  WeightStore viewed = parse_torch_zip(d, owner->size(), "nested.ckpt", owner);
  WeightStore copied = parse_torch_zip(d, owner->size(), "nested.ckpt");
  expect_matches_ref(viewed, "io/nested_ref.safetensors");
  for (const char* k : {"model.w_f32", "model.w_f16", "model.i64", "model.rows"}) {
    EXPECT_TRUE(inside(viewed.get(k))) << k << ": copied although the entry is stored";
    EXPECT_FALSE(inside(copied.get(k))) << k << ": points into a buffer the caller may free";
  }
  EXPECT_FALSE(inside(viewed.get("model.transposed")));  // strided: gathered into a new tensor
}

TEST(Safetensors, NonUtf8NameIsAnErrorNotACrash) {
  TempDir t;
  std::map<std::string, Tensor> in = {{std::string("bad\xff\xfe"), ramp({2}, DType::F32, 1.f)}};
  try {
    save_safetensors(t / "bad.safetensors", in);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "bad.safetensors");
    EXPECT_HAS(e.what(), "UTF-8");
  }
  EXPECT_FALSE(fs::exists(t / "bad.safetensors"));
}
