// A1111 prompt parsing and chunking; see prompt.h for references.
#include "models/prompt.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace easel {

namespace {

using unicode::is_word;

// Python re's \s on str: Unicode White_Space plus the \x1c-\x1f separators (str.isspace).
bool is_space(char32_t c) { return unicode::is_space(c) || (c >= 0x1c && c <= 0x1f); }

char32_t cp_at(const std::string& s, size_t i) { return unicode::next(s, i); }

// Code point ending just before byte i (i > 0).
char32_t cp_before(const std::string& s, size_t i) {
  size_t b = i - 1;
  while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
  return unicode::next(s, b);
}

size_t skip_space(const std::string& s, size_t i) {
  while (i < s.size()) {
    size_t j = i;
    if (!is_space(unicode::next(s, j))) break;
    i = j;
  }
  return i;
}

// Python's float() of a [+-]?[.\d]+ match (\d = Unicode Nd); throws like float() does.
double parse_weight(const std::string& w) {
  std::string ascii;
  for (size_t i = 0; i < w.size();) {
    char32_t c = unicode::next(w, i);
    int d = unicode::decimal_value(c);
    ascii += d >= 0 ? (char)('0' + d) : (char)c;
  }
  char* end = nullptr;
  bool digit = ascii.find_first_of("0123456789") != std::string::npos;
  double v = std::strtod(ascii.c_str(), &end);
  if (!digit || end != ascii.c_str() + ascii.size()) fail("prompt", "invalid attention weight '" + w + "'");
  return v;
}

// At s[i] == ':': length of the match of :\s*([+-]?[.\d]+)\s*\) (0 if none); *w gets the group.
size_t weight_close(const std::string& s, size_t i, std::string* w) {
  size_t j = skip_space(s, i + 1);
  size_t ws = j;
  if (j < s.size() && (s[j] == '+' || s[j] == '-')) j++;
  size_t ds = j;
  while (j < s.size()) {
    size_t k = j;
    char32_t c = unicode::next(s, k);
    if (c != '.' && unicode::decimal_value(c) < 0) break;
    j = k;
  }
  if (j == ds) return 0;
  *w = s.substr(ws, j - ws);
  j = skip_space(s, j);
  if (j >= s.size() || s[j] != ')') return 0;
  return j + 1 - i;
}

// re.split(r"\s*\bBREAK\b\s*", text)
std::vector<std::string> split_break(const std::string& t) {
  std::vector<std::string> parts;
  size_t start = 0, pos = 0;
  while ((pos = t.find("BREAK", pos)) != std::string::npos) {
    size_t e = pos + 5;
    bool left = pos == 0 || !is_word(cp_before(t, pos));
    bool right = e == t.size() || !is_word(cp_at(t, e));
    if (!left || !right) {
      pos++;
      continue;
    }
    // The match starts at the first whitespace of the run before BREAK (not before `start`).
    size_t b = pos;
    while (b > start && is_space(cp_before(t, b))) {
      size_t k = b - 1;
      while (k > 0 && ((unsigned char)t[k] & 0xC0) == 0x80) k--;
      b = k;
    }
    parts.push_back(t.substr(start, b - start));
    start = pos = skip_space(t, e);
  }
  parts.push_back(t.substr(start));
  return parts;
}

}  // namespace

std::vector<WeightedText> parse_prompt_attention(const std::string& text) {
  std::vector<WeightedText> res;
  std::vector<size_t> round, square;
  const double round_mult = 1.1, square_mult = 1 / 1.1;
  auto multiply_range = [&](size_t start, double m) {
    for (size_t p = start; p < res.size(); p++) res[p].weight *= m;
  };
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    std::string w;
    size_t n;
    if (c == '\\') {  // \( \) \[ \] \\ -> the literal; a lone \ -> "" (text[1:])
      bool esc = i + 1 < text.size() && std::string("()[]\\").find(text[i + 1]) != std::string::npos;
      res.push_back({esc ? std::string(1, text[i + 1]) : std::string(), 1.0});
      i += esc ? 2 : 1;
      continue;
    }
    if (c == '(') {
      round.push_back(res.size());
      i++;
      continue;
    }
    if (c == '[') {
      square.push_back(res.size());
      i++;
      continue;
    }
    std::string tok;
    if (c == ':' && (n = weight_close(text, i, &w))) {
      tok = text.substr(i, n);
      i += n;
      if (!round.empty()) {
        size_t s = round.back();
        round.pop_back();
        multiply_range(s, parse_weight(w));
        continue;
      }
    } else if (c == ')' || c == ']' || c == ':') {
      tok = std::string(1, c);
      i++;
      if (c == ')' && !round.empty()) {
        multiply_range(round.back(), round_mult);
        round.pop_back();
        continue;
      }
      if (c == ']' && !square.empty()) {
        multiply_range(square.back(), square_mult);
        square.pop_back();
        continue;
      }
    } else {  // [^\\()\[\]:]+
      size_t j = text.find_first_of("\\()[]:", i);
      if (j == std::string::npos) j = text.size();
      tok = text.substr(i, j - i);
      i = j;
    }
    auto parts = split_break(tok);
    for (size_t k = 0; k < parts.size(); k++) {
      if (k > 0) res.push_back({"BREAK", -1});
      res.push_back({parts[k], 1.0});
    }
  }
  for (size_t p : round) multiply_range(p, round_mult);
  for (size_t p : square) multiply_range(p, square_mult);
  if (res.empty()) res.push_back({"", 1.0});
  for (size_t k = 0; k + 1 < res.size();) {
    if (res[k].weight == res[k + 1].weight) {
      res[k].text += res[k + 1].text;
      res.erase(res.begin() + k + 1);
    } else {
      k++;
    }
  }
  return res;
}

std::string extract_lora_tags(const std::string& prompt, std::vector<LoraTag>* loras) {
  std::string out;
  size_t i = 0;
  while (i < prompt.size()) {
    if (prompt[i] == '<') {
      // <(\w+):([^>]+)>
      size_t j = i + 1;
      while (j < prompt.size()) {
        size_t k = j;
        if (!is_word(unicode::next(prompt, k))) break;
        j = k;
      }
      size_t close = prompt.find('>', j);
      if (j > i + 1 && j < prompt.size() && prompt[j] == ':' && close != std::string::npos && close > j + 1) {
        std::string type = prompt.substr(i + 1, j - i - 1);
        std::string args = prompt.substr(j + 1, close - j - 1);
        if (loras && (type == "lora" || type == "lyco")) {
          // ExtraNetworkParams: split on ':'; "k=v" items are named, the rest positional.
          std::vector<std::string> pos;
          std::string te_s, unet_s;
          size_t a = 0;
          while (true) {
            size_t b = args.find(':', a);
            std::string item = args.substr(a, b == std::string::npos ? std::string::npos : b - a);
            size_t eq = item.find('=');
            if (eq != std::string::npos && item.find('=', eq + 1) == std::string::npos) {
              if (item.substr(0, eq) == "te") te_s = item.substr(eq + 1);
              if (item.substr(0, eq) == "unet") unet_s = item.substr(eq + 1);
            } else {
              pos.push_back(item);
            }
            if (b == std::string::npos) break;
            a = b + 1;
          }
          auto num = [&](const std::string& s) {  // Python float(): surrounding whitespace allowed
            char* end = nullptr;
            double v = std::strtod(s.c_str(), &end);
            while (end && (*end == ' ' || *end == '\t')) end++;
            if (s.empty() || end == s.c_str() || *end) fail("prompt", "invalid weight '" + s + "' in <" + type + ":" + args + ">");
            return (float)v;
          };
          LoraTag t;
          t.name = pos.empty() ? "" : pos[0];
          t.te_weight = pos.size() > 1 ? num(pos[1]) : 1.f;
          if (!te_s.empty()) t.te_weight = num(te_s);
          t.unet_weight = pos.size() > 2 ? num(pos[2]) : t.te_weight;
          if (!unet_s.empty()) t.unet_weight = num(unet_s);
          loras->push_back(t);
        }
        i = close + 1;
        continue;
      }
    }
    out += prompt[i++];
  }
  return out;
}

std::vector<SubPrompt> split_and(const std::string& prompt) {
  // re.split(r"\bAND\b", prompt)
  std::vector<std::string> parts;
  size_t start = 0, pos = 0;
  while ((pos = prompt.find("AND", pos)) != std::string::npos) {
    bool left = pos == 0 || !is_word(cp_before(prompt, pos));
    bool right = pos + 3 == prompt.size() || !is_word(cp_at(prompt, pos + 3));
    if (left && right) {
      parts.push_back(prompt.substr(start, pos - start));
      start = pos + 3;
      pos = start;
    } else {
      pos++;
    }
  }
  parts.push_back(prompt.substr(start));
  // re_weight: ^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$
  auto rstrip = [](const std::string& t, size_t end) {
    while (end > 0) {
      size_t b = end - 1;
      while (b > 0 && ((unsigned char)t[b] & 0xC0) == 0x80) b--;
      if (!is_space(cp_at(t, b))) break;
      end = b;
    }
    return end;
  };
  std::vector<SubPrompt> out;
  for (const std::string& p : parts) {
    size_t end = rstrip(p, p.size());
    SubPrompt sp{p.substr(0, end), 1.0};
    size_t colon = p.rfind(':', end == 0 ? 0 : end - 1);
    if (end > 0 && colon != std::string::npos) {
      size_t i = skip_space(p, colon + 1);
      std::string num;
      if (i < end && (p[i] == '+' || p[i] == '-')) num += p[i++];
      size_t digits = 0, dots = 0, j = i;
      for (; j < end; j++) {
        size_t k = j;
        char32_t c = unicode::next(p, k);
        int d = unicode::decimal_value(c);
        if (d >= 0) num += (char)('0' + d), digits++;
        else if (c == '.') num += '.', dots++;
        else break;
        j = k - 1;
      }
      if (j == end && digits > 0 && dots <= 1) {
        sp.text = p.substr(0, rstrip(p, colon));
        sp.weight = std::strtod(num.c_str(), nullptr);
      }
    }
    out.push_back(sp);
  }
  return out;
}

PromptChunk empty_chunk(const Tokenizer& tok, int chunk_length) {
  PromptChunk c;
  c.tokens.assign(chunk_length + 2, tok.eos_id());
  c.tokens[0] = tok.bos_id();
  c.multipliers.assign(chunk_length + 2, 1.f);
  return c;
}

std::vector<PromptChunk> chunk_prompt(const Tokenizer& tok, const std::string& prompt, const ChunkOptions& opt,
                                      int* token_count_out) {
  std::vector<WeightedText> parsed =
      opt.emphasis ? parse_prompt_attention(prompt) : std::vector<WeightedText>{{prompt, 1.0}};
  const int L = opt.chunk_length, comma = tok.comma_id();
  std::vector<PromptChunk> chunks;
  PromptChunk chunk;
  int token_count = 0, last_comma = -1;

  auto next_chunk = [&](bool is_last) {
    token_count += is_last ? (int)chunk.tokens.size() : L;
    int to_add = L - (int)chunk.tokens.size();
    if (to_add > 0) {
      chunk.tokens.insert(chunk.tokens.end(), to_add, tok.eos_id());
      chunk.multipliers.insert(chunk.multipliers.end(), to_add, 1.f);
    }
    chunk.tokens.insert(chunk.tokens.begin(), tok.bos_id());
    chunk.tokens.push_back(tok.eos_id());
    chunk.multipliers.insert(chunk.multipliers.begin(), 1.f);
    chunk.multipliers.push_back(1.f);
    last_comma = -1;
    chunks.push_back(std::move(chunk));
    chunk = PromptChunk();
  };

  for (const auto& part : parsed) {
    if (part.text == "BREAK" && part.weight == -1) {
      next_chunk(false);
      continue;
    }
    std::vector<int> ids = tok.encode(part.text);
    float weight = (float)part.weight;  // torch.asarray(multipliers): float32
    for (int token : ids) {
      if (token == comma) {
        last_comma = (int)chunk.tokens.size();
      } else if (opt.comma_backtrack != 0 && (int)chunk.tokens.size() == L && last_comma != -1 &&
                 (int)chunk.tokens.size() - last_comma <= opt.comma_backtrack) {
        int at = last_comma + 1;
        std::vector<int> rt(chunk.tokens.begin() + at, chunk.tokens.end());
        std::vector<float> rm(chunk.multipliers.begin() + at, chunk.multipliers.end());
        chunk.tokens.resize(at);
        chunk.multipliers.resize(at);
        next_chunk(false);
        chunk.tokens = std::move(rt);
        chunk.multipliers = std::move(rm);
      }
      if ((int)chunk.tokens.size() == L) next_chunk(false);
      chunk.tokens.push_back(token);
      chunk.multipliers.push_back(weight);
    }
  }
  if (!chunk.tokens.empty() || chunks.empty()) next_chunk(true);
  if (token_count_out) *token_count_out = token_count;
  return chunks;
}

// ---------------------------------------------------------------- prompt editing schedules
// A1111's lark grammar (Earley), parsed here by recursive descent (prompts never contain junk
// brackets, so the bracket structure is unique and greedy matching finds it):
//   !start: (prompt | /[][():]/+)*
//   prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
//   !emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
//   scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
//   alternate: "[" prompt ("|" [prompt])+ "]"
//   plain: /([^\\\[\]():|]|\\.)+/      NUMBER: lark's SIGNED_NUMBER
namespace {

struct SNode;
using Seq = std::vector<SNode>;
struct SNode {
  enum Kind { Text, Scheduled, Alternate } kind = Text;
  std::string text;             // Text; Scheduled: the NUMBER literal
  std::vector<Seq> parts;       // Scheduled: {before, after}; Alternate: the options
  bool has_before = false;      // Scheduled
  int when = 0;                 // Scheduled, after collect_steps
};

struct ScheduleParser {
  const std::string& s;

  // lark SIGNED_NUMBER at i; returns its end or npos.
  size_t number(size_t i) const {
    auto digits = [&](size_t k) {
      size_t j = k;
      while (j < s.size() && s[j] >= '0' && s[j] <= '9') j++;
      return j;
    };
    size_t j = i;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) j++;
    size_t a = digits(j);
    bool intpart = a > j;
    size_t k = a;
    bool frac = false;
    if (k < s.size() && s[k] == '.') {
      size_t b = digits(k + 1);
      frac = b > k + 1;
      if (intpart || frac) k = b;
    }
    if (!intpart && !frac) return std::string::npos;
    if (k < s.size() && (s[k] == 'e' || s[k] == 'E')) {
      size_t e = k + 1;
      if (e < s.size() && (s[e] == '+' || s[e] == '-')) e++;
      size_t d = digits(e);
      if (d > e) k = d;
    }
    return k;
  }

  size_t ws(size_t i) const { return skip_space(s, i); }

  // prompt: greedy; never fails.
  size_t prompt(size_t i, Seq& out) const {
    while (i < s.size()) {
      char c = s[i];
      if (c == '(' || c == '[') {
        size_t j = construct(i, out);
        if (j == std::string::npos) return i;
        i = j;
        continue;
      }
      // plain: ([^\\\[\]():|]|\\.)+   ('.' does not match a newline)
      size_t j = i;
      while (j < s.size()) {
        char d = s[j];
        if (d == '\\') {
          if (j + 1 >= s.size() || s[j + 1] == '\n') break;
          size_t k = j + 1;
          unicode::next(s, k);
          j = k;
        } else if (std::string("[]():|").find(d) != std::string::npos) {
          break;
        } else {
          j++;
        }
      }
      if (j == i) return i;
      out.push_back({SNode::Text, s.substr(i, j - i), {}, false, 0});
      i = j;
    }
    return i;
  }

  // A bracket construct at s[i] ('(' or '['); appends its nodes, returns its end or npos.
  size_t construct(size_t i, Seq& out) const {
    Seq a;
    size_t j = prompt(i + 1, a);
    if (j >= s.size()) return std::string::npos;
    auto literal = [&](const std::string& open, Seq& inner, const std::string& close) {
      out.push_back({SNode::Text, open, {}, false, 0});
      out.insert(out.end(), inner.begin(), inner.end());
      out.push_back({SNode::Text, close, {}, false, 0});
    };
    if (s[i] == '(') {
      if (s[j] == ')') {
        literal("(", a, ")");
        return j + 1;
      }
      if (s[j] != ':') return std::string::npos;
      Seq b;
      size_t k = prompt(j + 1, b);
      if (k >= s.size() || s[k] != ')') return std::string::npos;
      a.push_back({SNode::Text, ":", {}, false, 0});
      a.insert(a.end(), b.begin(), b.end());
      literal("(", a, ")");
      return k + 1;
    }
    if (s[j] == ']') {
      literal("[", a, "]");
      return j + 1;
    }
    if (s[j] == '|') {
      SNode alt{SNode::Alternate, "", {a}, false, 0};
      while (j < s.size() && s[j] == '|') {
        Seq b;
        j = prompt(j + 1, b);
        alt.parts.push_back(b);
      }
      if (j >= s.size() || s[j] != ']') return std::string::npos;
      out.push_back(alt);
      return j + 1;
    }
    if (s[j] != ':') return std::string::npos;
    // [after:when] or [before:after:when]
    auto tail = [&](size_t k, std::string& num) -> size_t {  // ":" [WS] NUMBER [WS] "]" after the ':'
      size_t n0 = ws(k), n1 = number(n0);
      if (n1 == std::string::npos) return std::string::npos;
      size_t e = ws(n1);
      if (e >= s.size() || s[e] != ']') return std::string::npos;
      num = s.substr(n0, n1 - n0);
      return e + 1;
    };
    std::string num;
    size_t e = tail(j + 1, num);
    if (e != std::string::npos) {
      out.push_back({SNode::Scheduled, num, {Seq{}, a}, false, 0});
      return e;
    }
    Seq b;
    size_t k = prompt(j + 1, b);
    if (k >= s.size() || s[k] != ':') return std::string::npos;
    e = tail(k + 1, num);
    if (e == std::string::npos) return std::string::npos;
    out.push_back({SNode::Scheduled, num, {a, b}, true, 0});
    return e;
  }

  // start; false on a parse error (a '|' outside an alternation, a dangling '\').
  bool start(Seq& out) const {
    size_t i = 0;
    while (i < s.size()) {
      i = prompt(i, out);
      if (i >= s.size()) break;
      if (std::string("[]():").find(s[i]) == std::string::npos) return false;
      out.push_back({SNode::Text, std::string(1, s[i]), {}, false, 0});
      i++;
    }
    return true;
  }
};

void collect_steps(Seq& seq, int steps, int int_offset, double flt_offset, std::vector<int>& res) {
  for (auto& n : seq) {
    for (auto& p : n.parts) collect_steps(p, steps, int_offset, flt_offset, res);
    if (n.kind == SNode::Scheduled) {
      double v = std::strtod(n.text.c_str(), nullptr);
      v = n.text.find('.') != std::string::npos ? (v - flt_offset) * steps : v - int_offset;
      double t = std::trunc(v);  // Python int()
      n.when = t >= steps ? steps : (int)std::max(t, -2147483647.0);
      if (n.when >= 1) res.push_back(n.when);
    } else if (n.kind == SNode::Alternate) {
      for (int k = 1; k <= steps; k++) res.push_back(k);
    }
  }
}

void text_at(const Seq& seq, int step, std::string& out) {
  for (auto& n : seq) {
    if (n.kind == SNode::Text) out += n.text;
    else if (n.kind == SNode::Scheduled) text_at(step <= n.when ? n.parts[0] : n.parts[1], step, out);
    else text_at(n.parts[(step - 1) % n.parts.size()], step, out);
  }
}

}  // namespace

std::vector<ScheduledPrompt> prompt_schedule(const std::string& prompt, int steps, int hires_steps) {
  int int_offset = 0;
  double flt_offset = 0;
  if (hires_steps > 0) {
    int_offset = steps;
    flt_offset = 1.0;
    steps = hires_steps;
  }
  Seq tree;
  if (!ScheduleParser{prompt}.start(tree)) return {{steps, prompt}};
  std::vector<int> at{steps};
  collect_steps(tree, steps, int_offset, flt_offset, at);
  std::sort(at.begin(), at.end());
  at.erase(std::unique(at.begin(), at.end()), at.end());
  std::vector<ScheduledPrompt> out;
  for (int t : at) {
    std::string text;
    text_at(tree, t, text);
    out.push_back({t, text});
  }
  return out;
}

const std::string& prompt_at_step(const std::vector<ScheduledPrompt>& schedule, int step) {
  if (schedule.empty()) fail("prompt", "empty prompt schedule");
  for (auto& e : schedule)
    if (step <= e.end_at_step) return e.text;
  return schedule.back().text;
}

}  // namespace easel
