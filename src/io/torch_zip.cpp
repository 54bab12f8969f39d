// torch.save zip checkpoints via libzip. https://pytorch.org/docs/stable/notes/serialization.html
#include "io/torch_zip.h"

#include <zip.h>

#include <cstring>
#include <unordered_map>

#include "io/pickle.h"

namespace easel {

namespace {

const char* W = "ckpt";
constexpr uint64_t kMaxPickle = 1ull << 30;  // data.pkl of a huge LLM is a few MB

uint64_t rd(const uint8_t* p, int k) {  // little-endian field
  uint64_t u = 0;
  for (int j = k; j-- > 0;) u = (u << 8) | p[j];
  return u;
}

// Local header offsets of the entries, from the central directory (libzip does not expose them).
// Only used to find where a STORED entry's bytes lie; every field is bounds-checked, and an entry
// missing here is simply read through libzip. ZIP64 (archives over 4 GB) included.
//   https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT (4.3.12-4.3.16, 4.5.3)
std::unordered_map<std::string, uint64_t> local_header_offsets(const uint8_t* d, size_t n) {
  std::unordered_map<std::string, uint64_t> out;
  if (n < 22) return out;
  size_t eocd = n - 22, stop = n - 22 > 0xffff ? n - 22 - 0xffff : 0;
  while (rd(d + eocd, 4) != 0x06054b50) {
    if (eocd == stop) return out;
    --eocd;
  }
  uint64_t entries = rd(d + eocd + 10, 2), cd = rd(d + eocd + 16, 4);
  if ((entries == 0xffff || cd == 0xffffffff) && eocd >= 20 && rd(d + eocd - 20, 4) == 0x07064b50) {
    uint64_t z = rd(d + eocd - 20 + 8, 8);  // ZIP64 end of central directory record
    if (z > n || n - z < 56 || rd(d + z, 4) != 0x06064b50) return out;
    entries = rd(d + z + 32, 8);
    cd = rd(d + z + 48, 8);
  }
  uint64_t p = cd;
  for (uint64_t e = 0; e < entries; ++e) {
    if (p > n || n - p < 46 || rd(d + p, 4) != 0x02014b50) break;
    uint64_t comp = rd(d + p + 20, 4), size = rd(d + p + 24, 4), lho = rd(d + p + 42, 4);
    uint64_t nl = rd(d + p + 28, 2), xl = rd(d + p + 30, 2), cl = rd(d + p + 32, 2);
    if (n - p - 46 < nl + xl + cl) break;
    std::string name((const char*)d + p + 46, nl);
    for (uint64_t x = p + 46 + nl, xe = x + xl; xe - x >= 4;) {  // extra fields: ZIP64 sizes/offset
      uint64_t id = rd(d + x, 2), len = rd(d + x + 2, 2);
      if (xe - x - 4 < len) break;
      if (id == 1) {
        uint64_t q = x + 4, qe = q + len;
        for (uint64_t* f : {&size, &comp, &lho})
          if (*f == 0xffffffff && qe - q >= 8) *f = rd(d + q, 8), q += 8;
      }
      x += 4 + len;
    }
    out.emplace(std::move(name), lho);
    p += 46 + nl + xl + cl;
  }
  return out;
}

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};

class Archive {
 public:
  Archive(const uint8_t* data, size_t size, const std::string& name, std::shared_ptr<void> owner)
      : name_(name), data_(data), size_(size), owner_(std::move(owner)) {
    zip_error_t e;
    zip_error_init(&e);
    zip_source_t* src = zip_source_buffer_create(data, size, 0, &e);
    if (!src) bad("cannot open zip: " + std::string(zip_error_strerror(&e)));
    zip_t* z = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &e);
    if (!z) {
      zip_source_free(src);
      std::string msg = zip_error_strerror(&e);
      zip_error_fini(&e);
      bad("not a valid zip archive: " + msg);
    }
    zip_error_fini(&e);
    z_.reset(z);
    if (owner_) lho_ = local_header_offsets(data, size);
  }

  [[noreturn]] void bad(const std::string& what) const { fail(W, name_ + ": " + what); }

  // Index of entry `path`, or -1.
  zip_int64_t find(const std::string& path) const { return zip_name_locate(z_.get(), path.c_str(), 0); }

  // The archive folder that holds data.pkl ("archive/", "sd-v1-4/", or "" at the root).
  std::string prefix() const {
    zip_int64_t n = zip_get_num_entries(z_.get(), 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* nm = zip_get_name(z_.get(), (zip_uint64_t)i, 0);
      if (!nm) continue;
      std::string s = nm;
      if (s == "data.pkl") return "";
      size_t slash = s.find('/');
      if (slash != std::string::npos && s.compare(slash, std::string::npos, "/data.pkl") == 0)
        return s.substr(0, slash + 1);
    }
    bad("zip archive has no data.pkl (not a torch checkpoint)");
  }

  // Entry `path` read into a new 64-byte-aligned buffer of exactly `expect` bytes (any size when
  // expect is 0, capped at `cap`). Throws naming the entry.
  TorchStorage read(const std::string& path, uint64_t expect, uint64_t cap) const {
    zip_int64_t idx = find(path);
    if (idx < 0) bad("missing archive entry '" + path + "'");
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(z_.get(), (zip_uint64_t)idx, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
      bad("cannot stat archive entry '" + path + "'");
    if (expect && st.size < expect)
      bad("archive entry '" + path + "' holds " + std::to_string(st.size) + " bytes, " + std::to_string(expect) +
          " expected (truncated?)");
    uint64_t n = expect ? expect : st.size;
    // Stored entries cannot be larger than the archive; deflate expands at most ~1032x.
    uint64_t limit = (st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method == ZIP_CM_STORE ? size_ : size_ * 1032;
    if (n > cap || n > limit) bad("archive entry '" + path + "' is implausibly large");
    if (const uint8_t* p = in_place(path, st, n)) {  // stored: a view of the mapping
      TorchStorage t;
      t.data = p;
      t.nbytes = n;
      t.owner = owner_;
      return t;
    }
    auto buf = std::make_shared<Tensor>(Tensor::empty({(int64_t)n}, DType::U8));
    if (n) {
      zip_file_t* f = zip_fopen_index(z_.get(), (zip_uint64_t)idx, 0);
      if (!f) bad("cannot read archive entry '" + path + "': " + zip_strerror(z_.get()));
      uint64_t got = 0;
      while (got < n) {
        zip_int64_t r = zip_fread(f, buf->data<uint8_t>() + got, n - got);
        if (r <= 0) {
          std::string msg = r < 0 ? zip_file_strerror(f) : "unexpected end of data";
          zip_fclose(f);
          bad("cannot read archive entry '" + path + "': " + msg);
        }
        got += (uint64_t)r;
      }
      zip_fclose(f);
    }
    TorchStorage t;
    t.data = buf->data<uint8_t>();
    t.nbytes = n;
    t.owner = buf;
    return t;
  }

 private:
  std::string name_;
  const uint8_t* data_;
  size_t size_;
  std::shared_ptr<void> owner_;
  std::unordered_map<std::string, uint64_t> lho_;

  // Where the `n` bytes of a STORED, unencrypted entry lie in the archive, or nullptr (read it).
  const uint8_t* in_place(const std::string& path, const zip_stat_t& st, uint64_t n) const {
    if (!owner_ || !(st.valid & ZIP_STAT_COMP_METHOD) || st.comp_method != ZIP_CM_STORE ||
        !(st.valid & ZIP_STAT_COMP_SIZE) || st.comp_size != st.size ||
        ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE))
      return nullptr;
    auto it = lho_.find(path);
    if (it == lho_.end()) return nullptr;
    uint64_t h = it->second;
    if (h > size_ || size_ - h < 30 || rd(data_ + h, 4) != 0x04034b50) bad("corrupt local header of '" + path + "'");
    uint64_t nl = rd(data_ + h + 26, 2), off = h + 30 + nl + rd(data_ + h + 28, 2);
    // The local header must name this entry (guards against a central directory read differently
    // from libzip's, e.g. duplicate names).
    if (nl != path.size() || size_ - h - 30 < nl || std::memcmp(data_ + h + 30, path.data(), nl) != 0)
      bad("local header of '" + path + "' names another entry");
    if (off > size_ || size_ - off < n) bad("archive entry '" + path + "' extends past end of file (truncated?)");
    return data_ + off;
  }
  std::unique_ptr<zip_t, ZipCloser> z_;
};

}  // namespace

bool is_legacy_torch(const uint8_t* d, size_t n) {
  // PROTO 2, LONG1 10 bytes: torch's magic number 0x1950a86a20f9469cfc6c.
  static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return n >= sizeof magic && std::memcmp(d, magic, sizeof magic) == 0;
}

WeightStore parse_torch_zip(const uint8_t* data, size_t size, const std::string& name, std::shared_ptr<void> owner) {
  Archive zip(data, size, name, std::move(owner));
  std::string pre = zip.prefix();
  if (zip.find(pre + "byteorder") >= 0) {
    TorchStorage bo = zip.read(pre + "byteorder", 0, 64);
    std::string order((const char*)bo.data, bo.nbytes);
    if (order != "little") zip.bad("byte order '" + order + "' is not supported (little-endian only)");
  }
  TorchStorage pkl = zip.read(pre + "data.pkl", 0, kMaxPickle);
  StorageLoader load = [&](const std::string& key, size_t nbytes) {
    if (key.empty() || key.find('/') != std::string::npos || key.find("..") != std::string::npos)
      zip.bad("invalid storage key '" + key + "'");
    return zip.read(pre + "data/" + key, nbytes, size);
  };
  return unpickle_state_dict(pkl.data, pkl.nbytes, load, name);
}

}  // namespace easel
