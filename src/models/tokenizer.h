// CLIP byte-level BPE tokenizer, id-for-id identical to transformers' CLIPTokenizer
// (tokenizers backend, what diffusers uses):
//   https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/tokenization_clip.py
//   https://github.com/openai/CLIP/blob/main/clip/simple_tokenizer.py
// Pipeline: split out literal "<|startoftext|>"/"<|endoftext|>" (matched case-sensitively on the raw
// text), then per segment NFC -> every Unicode-whitespace run to one space -> per-character full
// lowercase; pre-tokenise with
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// map bytes through GPT-2's bytes_to_unicode, BPE with "</w>" on each word's last symbol.
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace easel {

class Tokenizer {
 public:
  // Merges from OpenAI's bpe_simple_vocab_16e6.txt.gz (EASEL_DATA_DIR by default, or EASEL_DATA_DIR
  // in the environment, or `path`). Vocab built as CLIP does (49408 entries).
  static Tokenizer from_bpe_gz(const std::string& path = "");
  // A diffusers/transformers tokenizer folder: vocab.json + merges.txt (+ optional
  // tokenizer_config.json / special_tokens_map.json for the pad token).
  static Tokenizer from_folder(const std::string& dir);
  // The default CLIP tokenizer, loaded once and shared (thread-safe).
  static const Tokenizer& clip();

  // Ids without BOS/EOS, no truncation.
  std::vector<int> encode(const std::string& text) const;
  // diffusers' tokenizer(text, padding="max_length", max_length=77, truncation=True):
  // BOS + first (max_len-2) ids + EOS, then pad_id up to max_len. pad_id < 0 uses pad_id().
  std::vector<int> encode_padded(const std::string& text, int max_len = 77, int pad_id = -1) const;
  std::string decode(const std::vector<int>& ids) const;  // "</w>" -> space, trimmed

  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  int pad_id() const { return pad_; }  // tokenizer_config pad_token; eos when not given
  int comma_id() const { return token_id(",</w>"); }
  int vocab_size() const { return (int)id_to_token_.size(); }
  int token_id(const std::string& token) const;  // -1 when absent
  const std::string& token(int id) const { return id_to_token_.at(id); }

 private:
  void build(const std::vector<std::pair<std::string, std::string>>& merges);
  void bpe_word(const std::string& word, std::vector<int>& out) const;  // word already byte-mapped
  void encode_segment(const std::string& text, std::vector<int>& out) const;

  std::unordered_map<std::string, int> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int> ranks_;  // "a b" -> merge rank
  std::string byte_sym_[256];                   // bytes_to_unicode, UTF-8 encoded
  int bos_ = 49406, eos_ = 49407, pad_ = 49407;
  mutable std::unordered_map<std::string, std::vector<int>> cache_;
  mutable std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();
};

// Unicode helpers shared with the prompt parser (ICU-backed).
namespace unicode {
// Decodes one code point at s[i] (advancing i); invalid bytes decode as U+FFFD, one byte each.
char32_t next(const std::string& s, size_t& i);
void append_utf8(std::string& s, char32_t c);
bool is_letter(char32_t c);      // \p{L}
bool is_number(char32_t c);      // \p{N}
bool is_space(char32_t c);       // Unicode White_Space (what \s matches in the regexes above)
bool is_word(char32_t c);        // Python re's \w: letters, numbers, '_'
int decimal_value(char32_t c);   // Python re's \d (Nd) digit value, -1 otherwise
}  // namespace unicode

}  // namespace easel
