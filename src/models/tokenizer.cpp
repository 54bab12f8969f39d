// CLIP BPE tokenizer; see tokenizer.h for the exact pipeline and references.
#include "models/tokenizer.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <zlib.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace easel {

// ---------------------------------------------------------------- Unicode helpers
namespace unicode {

char32_t next(const std::string& s, size_t& i) {
  auto b = [&](size_t k) { return (unsigned char)s[k]; };
  unsigned char c = b(i);
  if (c < 0x80) {
    i++;
    return c;
  }
  int n = (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (n < 0 || i + n >= s.size()) {
    i++;
    return 0xFFFD;
  }
  char32_t cp = n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k <= n; k++) {
    if ((b(i + k) & 0xC0) != 0x80) {
      i++;
      return 0xFFFD;
    }
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  static const char32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    i++;
    return 0xFFFD;
  }
  i += n + 1;
  return cp;
}

void append_utf8(std::string& s, char32_t c) {
  if (c < 0x80) {
    s += (char)c;
  } else if (c < 0x800) {
    s += (char)(0xC0 | (c >> 6));
    s += (char)(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += (char)(0xE0 | (c >> 12));
    s += (char)(0x80 | ((c >> 6) & 0x3F));
    s += (char)(0x80 | (c & 0x3F));
  } else {
    s += (char)(0xF0 | (c >> 18));
    s += (char)(0x80 | ((c >> 12) & 0x3F));
    s += (char)(0x80 | ((c >> 6) & 0x3F));
    s += (char)(0x80 | (c & 0x3F));
  }
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return (U_GET_GC_MASK((UChar32)c) & U_GC_L_MASK) != 0;
}
bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return (U_GET_GC_MASK((UChar32)c) & U_GC_N_MASK) != 0;
}
bool is_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 9 && c <= 13);
  return u_isUWhiteSpace((UChar32)c);
}
bool is_word(char32_t c) { return c == '_' || is_letter(c) || is_number(c); }
int decimal_value(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9' ? (int)(c - '0') : -1;
  return u_charType((UChar32)c) == U_DECIMAL_DIGIT_NUMBER ? u_charDigitValue((UChar32)c) : -1;
}

}  // namespace unicode

namespace {

using unicode::append_utf8;

std::u32string decode_utf8(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out += unicode::next(s, i);
  return out;
}

// NFC via ICU (UTF-16 round trip). Text with no code point >= U+0300 is already NFC.
std::u32string nfc(const std::u32string& in) {
  bool simple = true;
  for (char32_t c : in) simple &= c < 0x300;
  if (simple) return in;
  std::string u8;
  for (char32_t c : in) append_utf8(u8, c);
  UErrorCode err = U_ZERO_ERROR;
  int32_t n16 = 0;
  u_strFromUTF8(nullptr, 0, &n16, u8.data(), (int32_t)u8.size(), &err);
  err = U_ZERO_ERROR;
  std::u16string src(n16, u'\0'), dst;
  u_strFromUTF8((UChar*)src.data(), n16, nullptr, u8.data(), (int32_t)u8.size(), &err);
  const UNormalizer2* norm = unorm2_getNFCInstance(&err);
  if (U_FAILURE(err)) fail("tokenizer", std::string("ICU NFC unavailable: ") + u_errorName(err));
  int32_t cap = n16 * 3 + 16;
  dst.resize(cap);
  int32_t len = unorm2_normalize(norm, (const UChar*)src.data(), n16, (UChar*)dst.data(), cap, &err);
  if (U_FAILURE(err)) fail("tokenizer", std::string("ICU NFC failed: ") + u_errorName(err));
  std::u32string out;
  for (int32_t i = 0; i < len;) {
    UChar32 c;
    U16_NEXT(dst.data(), i, len, c);
    out += (char32_t)c;
  }
  return out;
}

// Per-character full lowercase (Rust's char::to_lowercase, what tokenizers' Lowercase uses: no
// context-dependent rules such as final sigma). U+0130 is the only unconditional multi-char case.
void lower_into(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out += (c >= 'A' && c <= 'Z') ? c + 32 : c;
  } else if (c == 0x130) {
    out += U'i';
    out += (char32_t)0x307;
  } else {
    out += (char32_t)u_tolower((UChar32)c);
  }
}

// tokenizers normalizer: NFC, Replace(\s+ -> " "), Lowercase.
std::u32string normalize(const std::string& text) {
  std::u32string s = nfc(decode_utf8(text)), out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (unicode::is_space(s[i])) {
      while (i + 1 < s.size() && unicode::is_space(s[i + 1])) i++;
      out += U' ';
    } else {
      lower_into(s[i], out);
    }
  }
  return out;
}

bool starts_with(const std::u32string& s, size_t i, const char* lit) {
  for (size_t k = 0; lit[k]; k++)
    if (i + k >= s.size() || s[i + k] != (char32_t)(unsigned char)lit[k]) return false;
  return true;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) at s[i], 0 if none.
size_t contraction(const std::u32string& s, size_t i) {
  if (s[i] != U'\'') return 0;
  for (const char* c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
    if (starts_with(s, i, c)) return std::char_traits<char>::length(c);
  return 0;
}

// Punctuation run: [^\s\p{L}\p{N}]+ starting at i.
size_t punct_run(const std::u32string& s, size_t i) {
  size_t j = i;
  while (j < s.size() && !unicode::is_space(s[j]) && !unicode::is_letter(s[j]) && !unicode::is_number(s[j])) j++;
  return j - i;
}

// GPT-2's regex (ByteLevel pre-tokenizer, use_regex=true) on one whitespace-free CLIP piece:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+
void gpt2_split(const std::u32string& s, size_t b, size_t e, std::vector<std::pair<size_t, size_t>>& out) {
  size_t i = b;
  while (i < e) {
    size_t n = contraction(s, i);
    if (n && i + n <= e) {
    } else if (unicode::is_letter(s[i])) {
      n = 0;
      while (i + n < e && unicode::is_letter(s[i + n])) n++;
    } else if (unicode::is_number(s[i])) {
      n = 0;
      while (i + n < e && unicode::is_number(s[i + n])) n++;
    } else {
      n = std::min(punct_run(s, i), e - i);
    }
    out.push_back({i, i + n});
    i += n;
  }
}

// CLIP's pre-tokenizer regex (first alternative that matches at each position wins), then GPT-2's.
std::vector<std::pair<size_t, size_t>> pre_tokenize(const std::u32string& s) {
  std::vector<std::pair<size_t, size_t>> pieces;
  size_t i = 0;
  while (i < s.size()) {
    size_t n = 0;
    if (starts_with(s, i, "<|startoftext|>")) n = 15;
    else if (starts_with(s, i, "<|endoftext|>")) n = 13;
    else if ((n = contraction(s, i))) {
    } else if (unicode::is_letter(s[i])) {
      while (i + n < s.size() && unicode::is_letter(s[i + n])) n++;
    } else if (unicode::is_number(s[i])) {
      n = 1;
    } else if (unicode::is_space(s[i])) {
      i++;
      continue;
    } else {
      n = punct_run(s, i);
    }
    gpt2_split(s, i, i + n, pieces);
    i += n;
  }
  return pieces;
}

// GPT-2 bytes_to_unicode: these bytes map to themselves, the others to U+0100 + n (in order).
bool printable_byte(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

std::string read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail("tokenizer", path + ": cannot open");
  std::string data;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) data.append(buf, n);
  bool err = n < 0;
  gzclose(f);
  if (err) fail("tokenizer", path + ": gzip read error");
  return data;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("tokenizer", path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool split_merge(const std::string& line, std::pair<std::string, std::string>& m) {
  size_t sp = line.find(' ');
  if (sp == std::string::npos || sp == 0) return false;
  size_t end = line.find_first_of(" \r", sp + 1);
  m = {line.substr(0, sp), line.substr(sp + 1, end == std::string::npos ? std::string::npos : end - sp - 1)};
  return !m.second.empty();
}

}  // namespace

// ---------------------------------------------------------------- Tokenizer

void Tokenizer::build(const std::vector<std::pair<std::string, std::string>>& merges) {
  int n = 0;
  for (int b = 0; b < 256; b++) {
    byte_sym_[b].clear();
    append_utf8(byte_sym_[b], printable_byte(b) ? (char32_t)b : (char32_t)(256 + n++));
  }
  ranks_.clear();
  ranks_.reserve(merges.size() * 2);
  for (size_t r = 0; r < merges.size(); r++) ranks_.emplace(merges[r].first + " " + merges[r].second, (int)r);
}

Tokenizer Tokenizer::from_bpe_gz(const std::string& path_) {
  std::string path = path_;
  if (path.empty()) {
    const char* env = std::getenv("EASEL_DATA_DIR");
#ifdef EASEL_DATA_DIR
    std::string dir = env ? env : EASEL_DATA_DIR;
#else
    std::string dir = env ? env : "data";
#endif
    path = dir + "/bpe_simple_vocab_16e6.txt.gz";
  }
  std::string text = read_gz(path);
  // Line 0 is a header; CLIP uses merges 1 .. 49152-256-2.
  std::vector<std::pair<std::string, std::string>> merges;
  const size_t want = 49152 - 256 - 2;
  size_t pos = text.find('\n');
  while (pos != std::string::npos && merges.size() < want) {
    size_t end = text.find('\n', pos + 1);
    std::string line = text.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
    std::pair<std::string, std::string> m;
    if (!split_merge(line, m)) fail("tokenizer", path + ": bad merge line " + std::to_string(merges.size() + 2));
    merges.push_back(std::move(m));
    pos = end;
  }
  if (merges.size() != want)
    fail("tokenizer", path + ": expected " + std::to_string(want) + " merges, found " + std::to_string(merges.size()));
  Tokenizer t;
  t.build(merges);
  // Vocab: 256 byte symbols, the same with </w>, one per merge, then the two specials.
  // bytes_to_unicode order: the printable bytes first, then the others.
  std::vector<std::string> order;
  for (int pass = 0; pass < 2; pass++)
    for (int b = 0; b < 256; b++)
      if (printable_byte(b) == (pass == 0)) order.push_back(t.byte_sym_[b]);
  t.id_to_token_ = order;
  for (auto& s : order) t.id_to_token_.push_back(s + "</w>");
  for (auto& m : merges) t.id_to_token_.push_back(m.first + m.second);
  t.id_to_token_.push_back("<|startoftext|>");
  t.id_to_token_.push_back("<|endoftext|>");
  for (size_t i = 0; i < t.id_to_token_.size(); i++) t.vocab_.emplace(t.id_to_token_[i], (int)i);
  t.bos_ = t.token_id("<|startoftext|>");
  t.eos_ = t.pad_ = t.token_id("<|endoftext|>");
  return t;
}

Tokenizer Tokenizer::from_folder(const std::string& dir) {
  Tokenizer t;
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(read_file(dir + "/vocab.json"));
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer", dir + "/vocab.json: " + e.what());
  }
  int max_id = -1;
  for (auto& [k, v] : vocab.items()) max_id = std::max(max_id, v.get<int>());
  t.id_to_token_.assign(max_id + 1, "");
  for (auto& [k, v] : vocab.items()) {
    t.vocab_[k] = v.get<int>();
    t.id_to_token_[v.get<int>()] = k;
  }
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream ms(read_file(dir + "/merges.txt"));
  std::string line;
  size_t ln = 0;
  while (std::getline(ms, line)) {
    ln++;
    if ((ln == 1 && line.rfind("#version", 0) == 0) || line.empty() || line == "\r") continue;
    std::pair<std::string, std::string> m;
    if (!split_merge(line, m)) fail("tokenizer", dir + "/merges.txt: bad line " + std::to_string(ln));
    merges.push_back(std::move(m));
  }
  t.build(merges);
  t.bos_ = t.token_id("<|startoftext|>");
  t.eos_ = t.pad_ = t.token_id("<|endoftext|>");
  if (t.bos_ < 0 || t.eos_ < 0) fail("tokenizer", dir + "/vocab.json: no <|startoftext|>/<|endoftext|> entries");
  for (const char* f : {"/special_tokens_map.json", "/tokenizer_config.json"}) {  // later file wins
    std::ifstream in(dir + f);
    if (!in) continue;
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("pad_token")) continue;
    auto p = j["pad_token"];
    std::string name = p.is_string() ? p.get<std::string>()
                       : (p.is_object() && p.contains("content")) ? p["content"].get<std::string>() : "";
    if (!name.empty()) {
      int id = t.token_id(name);
      if (id < 0) fail("tokenizer", dir + f + ": pad_token '" + name + "' not in vocab.json");
      t.pad_ = id;
    }
  }
  return t;
}

const Tokenizer& Tokenizer::clip() {
  static const Tokenizer t = from_bpe_gz();
  return t;
}

int Tokenizer::token_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

void Tokenizer::bpe_word(const std::string& word, std::vector<int>& out) const {
  {
    std::lock_guard<std::mutex> lk(*mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Symbols = the word's code points; the last carries "</w>".
  std::vector<std::string> sym;
  for (size_t i = 0; i < word.size();) {
    size_t j = i;
    unicode::next(word, j);
    sym.push_back(word.substr(i, j - i));
    i = j;
  }
  if (sym.empty()) return;
  sym.back() += "</w>";
  // OpenAI's loop: merge every occurrence of the lowest-ranked pair, left to right, until none.
  std::string key;
  while (sym.size() > 1) {
    int best = INT_MAX;
    for (size_t i = 0; i + 1 < sym.size(); i++) {
      key.assign(sym[i]).append(" ").append(sym[i + 1]);
      auto it = ranks_.find(key);
      if (it != ranks_.end() && it->second < best) best = it->second;
    }
    if (best == INT_MAX) break;
    std::vector<std::string> merged;
    merged.reserve(sym.size());
    for (size_t i = 0; i < sym.size(); i++) {
      if (i + 1 < sym.size()) {
        key.assign(sym[i]).append(" ").append(sym[i + 1]);
        auto it = ranks_.find(key);
        if (it != ranks_.end() && it->second == best) {
          merged.push_back(sym[i] + sym[i + 1]);
          i++;
          continue;
        }
      }
      merged.push_back(sym[i]);
    }
    sym.swap(merged);
  }
  std::vector<int> ids;
  for (auto& s : sym) {
    int id = token_id(s);
    ids.push_back(id < 0 ? eos_ : id);  // unk_token is <|endoftext|> (unreachable: every byte is in the vocab)
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lk(*mu_);
  if (cache_.size() > 100000) cache_.clear();
  cache_.emplace(word, std::move(ids));
}

void Tokenizer::encode_segment(const std::string& text, std::vector<int>& out) const {
  std::u32string s = normalize(text);
  std::string piece, word;
  for (auto [b, e] : pre_tokenize(s)) {
    piece.clear();
    for (size_t i = b; i < e; i++) append_utf8(piece, s[i]);
    word.clear();
    for (unsigned char c : piece) word += byte_sym_[c];
    bpe_word(word, out);
  }
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  // Added tokens are matched on the raw text first (tokenizers' AddedVocabulary, normalized=false).
  static const std::string sot = "<|startoftext|>", eot = "<|endoftext|>";
  std::vector<int> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t a = text.find(sot, pos), b = text.find(eot, pos);
    size_t hit = std::min(a, b);
    encode_segment(text.substr(pos, hit == std::string::npos ? std::string::npos : hit - pos), out);
    if (hit == std::string::npos) break;
    out.push_back(hit == a ? bos_ : eos_);
    pos = hit + (hit == a ? sot.size() : eot.size());
  }
  return out;
}

std::vector<int> Tokenizer::encode_padded(const std::string& text, int max_len, int pad_id) const {
  if (max_len < 2) fail("tokenizer", "encode_padded: max_len " + std::to_string(max_len) + " < 2");
  std::vector<int> ids = encode(text);
  if ((int)ids.size() > max_len - 2) ids.resize(max_len - 2);
  ids.insert(ids.begin(), bos_);
  ids.push_back(eos_);
  ids.resize(max_len, pad_id < 0 ? pad_ : pad_id);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::unordered_map<char32_t, int> back;
  for (int b = 0; b < 256; b++) {
    size_t i = 0;
    back[unicode::next(byte_sym_[b], i)] = b;
  }
  std::string text;
  for (int id : ids) {
    std::string t = token(id);
    if (id == bos_ || id == eos_) {
      text += t;
      continue;
    }
    bool eow = t.size() >= 4 && t.compare(t.size() - 4, 4, "</w>") == 0;
    if (eow) t.resize(t.size() - 4);
    for (size_t i = 0; i < t.size();) {
      auto it = back.find(unicode::next(t, i));
      if (it != back.end()) text += (char)it->second;
    }
    if (eow) text += ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

}  // namespace easel
