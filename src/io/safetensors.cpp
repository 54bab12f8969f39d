#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <set>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace easel {

namespace {

const char* W = "safetensors";

// Live read-only file mappings, so their resident pages can be dropped (release_mapped_pages).
std::mutex g_maps_mu;
std::set<std::pair<void*, size_t>> g_maps;

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) {
      std::lock_guard<std::mutex> lk(g_maps_mu);
      g_maps.erase({addr, size});
      munmap(addr, size);
    }
  }
};

bool parse_dtype(const std::string& s, DType* t) {
  static const std::map<std::string, DType> m = {{"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
                                                 {"I64", DType::I64}, {"I32", DType::I32}, {"U8", DType::U8}};
  auto it = m.find(s);
  if (it == m.end()) return false;
  *t = it->second;
  return true;
}

const char* dtype_tag(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::U8: return "U8";
  }
  return "?";
}

// JSON nesting depth of a header (strings skipped). A valid header nests 3 deep; anything
// much deeper is rejected before parsing so hostile input cannot exhaust the stack.
int json_depth(const uint8_t* p, size_t n) {
  int depth = 0, max_depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < n; ++i) {
    uint8_t c = p[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

}  // namespace

std::shared_ptr<void> map_file(const std::string& path, const uint8_t** data, size_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("io", path + ": cannot open: " + std::strerror(errno));
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("io", path + ": not a regular file");
  }
  auto m = std::make_shared<Mapping>();
  m->size = (size_t)st.st_size;
  if (m->size > 0) {
    m->addr = mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m->addr == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("io", path + ": cannot map: " + std::strerror(e));
    }
    std::lock_guard<std::mutex> lk(g_maps_mu);
    g_maps.insert({m->addr, m->size});
  }
  ::close(fd);
  *data = (const uint8_t*)m->addr;
  *size = m->size;
  return m;
}

bool looks_like_safetensors(const uint8_t* d, size_t n) {
  if (n < 10) return false;
  uint64_t len;
  std::memcpy(&len, d, 8);
  return len >= 2 && len <= n - 8 && d[8] == '{';
}

WeightStore parse_safetensors(const uint8_t* d, size_t n, std::shared_ptr<void> owner, const std::string& name) {
  WeightStore ws;
  ws.source = name;
  if (n < 8) fail(W, name + ": file too small (" + std::to_string(n) + " bytes) for a safetensors header");
  uint64_t hlen;
  std::memcpy(&hlen, d, 8);
  if (hlen > 100u * 1024 * 1024) fail(W, name + ": header length " + std::to_string(hlen) + " is implausibly large");
  if (hlen > n - 8) fail(W, name + ": header length " + std::to_string(hlen) + " extends past end of file (truncated?)");
  if (json_depth(d + 8, hlen) > 8) fail(W, name + ": header JSON is nested too deeply");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(d + 8, d + 8 + hlen);
  } catch (const std::exception& e) {
    fail(W, name + ": header is not valid JSON: " + e.what());
  }
  if (!j.is_object()) fail(W, name + ": header is not a JSON object");
  const uint8_t* base = d + 8 + hlen;
  uint64_t data_size = n - 8 - hlen;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const auto& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(W, name + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        ws.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    std::string where = name + ": tensor '" + key + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(W, where + ": entry needs dtype, shape and data_offsets");
    const auto& jd = v["dtype"];
    const auto& js = v["shape"];
    const auto& jo = v["data_offsets"];
    DType t;
    if (!jd.is_string() || !parse_dtype(jd.get<std::string>(), &t))
      fail(W, where + ": unsupported dtype " + jd.dump() + " (F32, F16, BF16, I64, I32, U8)");
    if (!js.is_array() || js.size() > 8) fail(W, where + ": shape must be an array of at most 8 dims");
    Shape shape;
    uint64_t numel = 1;
    for (auto& e : js) {
      if (!e.is_number_unsigned()) fail(W, where + ": shape has a non-integer or negative entry");
      uint64_t dim = e.get<uint64_t>();
      if (dim > (1ull << 40) || (dim && numel > (1ull << 40) / dim)) fail(W, where + ": shape is implausibly large");
      numel *= dim;
      shape.push_back((int64_t)dim);
    }
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      fail(W, where + ": data_offsets must be two non-negative integers");
    uint64_t b = jo[0].get<uint64_t>(), e = jo[1].get<uint64_t>();
    if (b > e) fail(W, where + ": data_offsets begin > end");
    if (e > data_size) fail(W, where + " extends past end of file (truncated?)");
    if (e - b != numel * dtype_size(t))
      fail(W, where + ": " + std::to_string(e - b) + " bytes stored for shape " + shape_str(shape) + " of " +
                  dtype_tag(t) + " (" + std::to_string(numel * dtype_size(t)) + " expected)");
    const uint8_t* p = base + b;
    if ((uintptr_t)p % dtype_size(t) != 0) {  // unaligned: copy into an aligned buffer
      Tensor c = Tensor::empty(shape, t);
      std::memcpy(c.raw(), p, e - b);
      ws.tensors[key] = c;
    } else {
      ws.tensors[key] = Tensor::view_of(const_cast<uint8_t*>(p), shape, t, owner);
    }
  }
  return ws;
}

WeightStore load_safetensors(const std::string& path) {
  const uint8_t* d;
  size_t n;
  auto owner = map_file(path, &d, &n);
  return parse_safetensors(d, n, owner, path);
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (auto& [k, t] : tensors) {
    if (k == "__metadata__") fail(W, path + ": '__metadata__' is reserved and cannot name a tensor");
    if (t.device() != Device::CPU) fail(W, path + ": tensor '" + k + "' is not on the CPU");
    if (t.nbytes() && !t.raw()) fail(W, path + ": tensor '" + k + "' has no data");
    h[k] = {{"dtype", dtype_tag(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string hs;
  try {
    hs = h.dump();
  } catch (const nlohmann::json::exception&) {  // a name or metadata string that is not UTF-8
    fail(W, path + ": a tensor name or metadata value is not valid UTF-8");
  }
  while ((hs.size() + 8) % 8) hs += ' ';  // keep the data section 8-byte aligned
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".tmp" + std::to_string(::getpid()) + "." + std::to_string(counter++);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(W, path + ": cannot write: " + std::strerror(errno));
  uint64_t hl = hs.size();
  bool ok = std::fwrite(&hl, 8, 1, f) == 1 && std::fwrite(hs.data(), 1, hs.size(), f) == hs.size();
  for (auto& [k, t] : tensors)
    if (ok && t.nbytes()) ok = std::fwrite(t.raw(), 1, t.nbytes(), f) == t.nbytes();
  int err = ok ? 0 : errno;
  if (std::fflush(f) != 0 && ok) ok = false, err = errno;
  if (std::fclose(f) != 0 && ok) ok = false, err = errno;
  if (!ok) {
    std::remove(tmp.c_str());
    fail(W, path + ": cannot write: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    fail(W, path + ": cannot write: " + std::strerror(err));
  }
}

void release_mapped_pages() {
  std::lock_guard<std::mutex> lk(g_maps_mu);
  // The mappings are private, read-only and never written: dropping their pages loses nothing;
  // later reads fault them back in from the page cache.
  for (auto& [addr, size] : g_maps) madvise(addr, size, MADV_DONTNEED);
}

}  // namespace easel
