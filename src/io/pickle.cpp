// Restricted pickle VM for torch state dicts. See pickle.h; opcode meanings from CPython's pickletools.py.
#include "io/pickle.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

namespace easel {

namespace {

const char* W = "ckpt";

// Element type of a torch storage class.
enum class SType : uint8_t { F32, F16, BF16, F64, I64, I32, U8, Bool, Unsupported };

struct StorageInfo {
  SType st;
  const char* py;  // torch class name
};

const std::map<std::string, SType>& storage_classes() {
  static const std::map<std::string, SType> m = {
      {"FloatStorage", SType::F32},  {"HalfStorage", SType::F16},       {"BFloat16Storage", SType::BF16},
      {"DoubleStorage", SType::F64}, {"LongStorage", SType::I64},       {"IntStorage", SType::I32},
      {"ByteStorage", SType::U8},    {"BoolStorage", SType::Bool},      {"ShortStorage", SType::Unsupported},
      {"CharStorage", SType::Unsupported}, {"ComplexFloatStorage", SType::Unsupported},
      {"ComplexDoubleStorage", SType::Unsupported}, {"QInt8Storage", SType::Unsupported},
      {"QUInt8Storage", SType::Unsupported}, {"QInt32Storage", SType::Unsupported},
      {"Float8_e4m3fnStorage", SType::Unsupported}, {"Float8_e5m2Storage", SType::Unsupported}};
  return m;
}

size_t stype_size(SType t) {
  switch (t) {
    case SType::F64: case SType::I64: return 8;
    case SType::F32: case SType::I32: return 4;
    case SType::F16: case SType::BF16: return 2;
    default: return 1;
  }
}

// What a global name resolves to.
enum class Fn : uint8_t { None, OrderedDict, RebuildTensor, RebuildParameter, Size, StorageClass, Inert };

struct Value;
struct TensorRef {
  Value* storage;  // a Storage value
  int64_t offset;
  Shape size, stride;
};

struct Value {
  enum Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, TensorV, Opaque };
  Kind kind = None;
  Fn fn = Fn::None;    // Global
  SType st = SType::F32;  // Global (storage class) / Storage
  int64_t i = 0;       // Int, Bool; Storage: numel
  double f = 0;
  std::string s;       // Str/Bytes; Global: "module.name"; Storage: key
  std::vector<Value*> items;  // Tuple/List; Dict as k0, v0, k1, v1, ...
  std::unique_ptr<TensorRef> t;
};

constexpr size_t kMaxValues = 4u << 20;   // values created by one pickle
constexpr size_t kMaxStack = 1u << 20;
constexpr int kMaxDepth = 32;             // nesting followed when flattening

class VM {
 public:
  VM(const uint8_t* d, size_t n, std::string name) : d_(d), n_(n), name_(std::move(name)) {}

  Value* run() {
    while (true) {
      if (p_ >= n_) err("ends without STOP (truncated?)");
      size_t at = p_;
      uint8_t op = d_[p_++];
      switch (op) {
        case 0x80: {  // PROTO
          uint8_t v = u8();
          if (v > 5) err("unsupported pickle protocol " + std::to_string(v));
          break;
        }
        case 0x95: take(8); break;  // FRAME: a length hint only
        case '.': {  // STOP
          if (stack_.empty() || (!marks_.empty() && marks_.back() >= stack_.size())) err("STOP with an empty stack");
          return stack_.back();
        }
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '1': pop_mark(); break;                       // POP_MARK
        case '0':                                          // POP
          if (!marks_.empty() && marks_.back() == stack_.size()) marks_.pop_back();
          else pop();
          break;
        case '2': push(top()); break;  // DUP
        case 'N': push(make(Value::None)); break;
        case 0x88: case 0x89: {  // NEWTRUE / NEWFALSE
          Value* v = make(Value::Bool);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case '}': push(make(Value::Dict)); break;   // EMPTY_DICT
        case ']': push(make(Value::List)); break;   // EMPTY_LIST
        case ')': push(make(Value::Tuple)); break;  // EMPTY_TUPLE
        case 0x8f: push(make(Value::List)); break;  // EMPTY_SET (kept as a list)
        case 'J': { uint32_t u = le(4); push_int((int32_t)u); break; }  // BININT
        case 'K': push_int(u8()); break;                                 // BININT1
        case 'M': push_int((int64_t)le(2)); break;                       // BININT2
        case 0x8a: push_long(u8()); break;                               // LONG1
        case 0x8b: push_long(le(4)); break;                              // LONG4
        case 'G': {  // BINFLOAT (big-endian double)
          const uint8_t* b = take(8);
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = (u << 8) | b[k];
          Value* v = make(Value::Float);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'X': push_str(Value::Str, le(4)); break;     // BINUNICODE
        case 0x8c: push_str(Value::Str, u8()); break;     // SHORT_BINUNICODE
        case 0x8d: push_str(Value::Str, le(8)); break;    // BINUNICODE8
        case 'T': push_str(Value::Str, le(4)); break;     // BINSTRING (python 2 str)
        case 'U': push_str(Value::Str, u8()); break;      // SHORT_BINSTRING
        case 'B': push_str(Value::Bytes, le(4)); break;   // BINBYTES
        case 'C': push_str(Value::Bytes, u8()); break;    // SHORT_BINBYTES
        case 0x8e: case 0x96: push_str(Value::Bytes, le(8)); break;  // BINBYTES8, BYTEARRAY8
        case 't': {  // TUPLE
          Value* v = make(Value::Tuple);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          size_t k = op - 0x84;
          Value* v = make(Value::Tuple);
          v->items.resize(k);
          for (size_t j = k; j-- > 0;) v->items[j] = pop();
          push(v);
          break;
        }
        case 'l': {  // LIST
          Value* v = make(Value::List);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'd': {  // DICT
          Value* v = make(Value::Dict);
          v->items = pop_mark();
          if (v->items.size() % 2) err("DICT with an odd number of items");
          push(v);
          break;
        }
        case 'a': {  // APPEND
          Value* x = pop();
          append(top(), {x});
          break;
        }
        case 'e': case 0x90: {  // APPENDS, ADDITEMS
          auto xs = pop_mark();
          append(top(), xs);
          break;
        }
        case 's': {  // SETITEM
          Value* v = pop();
          Value* k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          auto kv = pop_mark();
          if (kv.size() % 2) err("SETITEMS with an odd number of items");
          set_items(top(), kv);
          break;
        }
        case 0x91: {  // FROZENSET
          Value* v = make(Value::List);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'q': put(u8()); break;                  // BINPUT
        case 'r': put(le(4)); break;                 // LONG_BINPUT
        case 0x94: put(memo_.size()); break;         // MEMOIZE
        case 'h': push(get(u8())); break;            // BINGET
        case 'j': push(get(le(4))); break;           // LONG_BINGET
        case 'c': {                                  // GLOBAL "module\nname\n"
          std::string mod = line(), nm = line();
          push(global(mod, nm));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Value* nm = pop();
          Value* mod = pop();
          if (mod->kind != Value::Str || nm->kind != Value::Str) err("STACK_GLOBAL needs two strings");
          push(global(mod->s, nm->s));
          break;
        }
        case 'R': {  // REDUCE
          Value* args = pop();
          Value* fn = pop();
          push(call(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ cls.__new__(cls, *args)
          Value* args = pop();
          Value* cls = pop();
          push(call(cls, args));
          break;
        }
        case 0x92: {  // NEWOBJ_EX
          pop();  // kwargs
          Value* args = pop();
          Value* cls = pop();
          push(call(cls, args));
          break;
        }
        case 'b': {  // BUILD: obj.__setstate__(state). Ignored: state only carries attributes
          pop();    // (OrderedDict._metadata, Lightning callback state), never tensor data.
          top();
          break;
        }
        case 'Q': push(persistent(pop())); break;  // BINPERSID
        default: {
          char buf[64];
          std::snprintf(buf, sizeof buf, "unsupported pickle opcode 0x%02x at offset %zu", op, at);
          err(buf);
        }
      }
    }
  }

  [[noreturn]] void err(const std::string& what) const { fail(W, name_ + ": " + what); }

  std::deque<Value> values;  // arena: stable addresses, flat destruction (cycles are harmless)

 private:
  const uint8_t* d_;
  size_t n_, p_ = 0;
  std::string name_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Value*> memo_;

  Value* make(Value::Kind k) {
    if (values.size() >= kMaxValues) err("pickle creates too many objects");
    values.emplace_back();
    values.back().kind = k;
    return &values.back();
  }
  void push(Value* v) {
    if (stack_.size() >= kMaxStack) err("pickle stack too deep");
    stack_.push_back(v);
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Value* pop() {
    if (stack_.size() <= floor()) err("pickle stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) err("pickle stack underflow");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) err("pickle MARK missing");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> out(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return out;
  }
  const uint8_t* take(uint64_t k) {
    if (k > n_ - p_) err("pickle truncated at offset " + std::to_string(p_));
    const uint8_t* b = d_ + p_;
    p_ += k;
    return b;
  }
  uint8_t u8() { return *take(1); }
  uint64_t le(int k) {
    const uint8_t* b = take(k);
    uint64_t u = 0;
    for (int j = k; j-- > 0;) u = (u << 8) | b[j];
    return u;
  }
  void push_int(int64_t x) {
    Value* v = make(Value::Int);
    v->i = x;
    push(v);
  }
  void push_long(uint64_t nbytes) {  // little-endian two's complement
    if (nbytes > 8) err("integer wider than 64 bits");
    const uint8_t* b = take(nbytes);
    uint64_t u = 0;
    for (size_t j = nbytes; j-- > 0;) u = (u << 8) | b[j];
    if (nbytes > 0 && nbytes < 8 && (b[nbytes - 1] & 0x80)) u |= ~0ull << (8 * nbytes);  // sign-extend
    push_int((int64_t)u);
  }
  void push_str(Value::Kind k, uint64_t len) {
    const uint8_t* b = take(len);
    Value* v = make(k);
    v->s.assign((const char*)b, len);
    push(v);
  }
  std::string line() {
    size_t start = p_;
    while (p_ < n_ && d_[p_] != '\n') {
      if (p_ - start > 256) err("GLOBAL name too long");
      ++p_;
    }
    if (p_ >= n_) err("pickle truncated in GLOBAL");
    std::string s((const char*)d_ + start, p_ - start);
    ++p_;
    return s;
  }
  void put(uint64_t idx) {
    if (idx > 0xffffffffu || memo_.size() >= kMaxValues) err("pickle memo too large");
    memo_[(uint32_t)idx] = top();
  }
  Value* get(uint64_t idx) {
    auto it = memo_.find((uint32_t)idx);
    if (idx > 0xffffffffu || it == memo_.end()) err("pickle memo key " + std::to_string(idx) + " undefined");
    return it->second;
  }
  void append(Value* list, const std::vector<Value*>& xs) {
    if (list->kind == Value::Opaque) return;
    if (list->kind != Value::List) err("APPEND to a non-list");
    list->items.insert(list->items.end(), xs.begin(), xs.end());
  }
  void set_items(Value* dict, const std::vector<Value*>& kv) {
    if (dict->kind == Value::Opaque) return;
    if (dict->kind != Value::Dict) err("SETITEM on a non-dict");
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  }

  Value* global(const std::string& mod, const std::string& nm) {
    Value* v = make(Value::Global);
    v->s = mod + "." + nm;
    static const std::map<std::string, Fn> allowed = {
        {"collections.OrderedDict", Fn::OrderedDict},
        {"torch._utils._rebuild_tensor", Fn::RebuildTensor},
        {"torch._utils._rebuild_tensor_v2", Fn::RebuildTensor},
        {"torch._utils._rebuild_parameter", Fn::RebuildParameter},
        {"torch._utils._rebuild_parameter_with_state", Fn::RebuildParameter},
        {"torch.Size", Fn::Size},
        // Inert data classes found in real checkpoints' non-tensor entries; they become opaque values.
        {"numpy.core.multiarray.scalar", Fn::Inert},
        {"numpy._core.multiarray.scalar", Fn::Inert},
        {"numpy.core.multiarray._reconstruct", Fn::Inert},
        {"numpy._core.multiarray._reconstruct", Fn::Inert},
        {"numpy.dtype", Fn::Inert},
        {"numpy.ndarray", Fn::Inert},
        {"_codecs.encode", Fn::Inert},
        {"builtins.set", Fn::Inert},
        {"__builtin__.set", Fn::Inert},
        {"torch.torch_version.TorchVersion", Fn::Inert},
        {"torch.device", Fn::Inert},  // also torch dtypes (torch.float16, ...) below: hyperparameter values
    };
    auto it = allowed.find(v->s);
    if (it != allowed.end()) {
      v->fn = it->second;
      return v;
    }
    // PyTorch Lightning's training state (callback classes as dict keys, their state) never holds
    // the weights; treated as opaque data, as ComfyUI's unpickler does.
    if (mod.rfind("pytorch_lightning.", 0) == 0 || mod.rfind("lightning.", 0) == 0) {
      v->fn = Fn::Inert;
      return v;
    }
    if (mod == "torch") {
      static const std::set<std::string> dtypes = {"float32", "float", "float16", "half", "bfloat16", "float64",
                                                   "double", "int64", "long", "int32", "int", "int16", "int8",
                                                   "uint8", "bool"};
      if (dtypes.count(nm)) {
        v->fn = Fn::Inert;
        return v;
      }
      auto st = storage_classes().find(nm);
      if (st != storage_classes().end()) {
        v->fn = Fn::StorageClass;
        v->st = st->second;
        return v;
      }
    }
    err("refusing to load: the pickle references '" + v->s +
        "', which is not allowed in a tensor checkpoint (nothing was executed)");
  }

  static bool is_int(const Value* v) { return v->kind == Value::Int; }
  bool int_tuple(const Value* v, Shape* out) {
    if (v->kind != Value::Tuple && v->kind != Value::List) return false;
    if (v->items.size() > 8) err("tensor has more than 8 dimensions");
    out->clear();
    for (auto* x : v->items) {
      if (!is_int(x)) return false;
      out->push_back(x->i);
    }
    return true;
  }

  Value* call(Value* fn, Value* args) {
    if (fn->kind == Value::Opaque) return make(Value::Opaque);
    if (fn->kind != Value::Global) err("REDUCE on a value that is not a callable");
    if (args->kind != Value::Tuple) err("REDUCE arguments are not a tuple");
    const auto& a = args->items;
    switch (fn->fn) {
      case Fn::OrderedDict: {
        Value* d = make(Value::Dict);
        if (!a.empty()) {  // OrderedDict([(k, v), ...])
          if (a[0]->kind != Value::List && a[0]->kind != Value::Tuple) err("OrderedDict argument is not a list");
          for (auto* kv : a[0]->items) {
            if ((kv->kind != Value::Tuple && kv->kind != Value::List) || kv->items.size() != 2)
              err("OrderedDict item is not a pair");
            d->items.push_back(kv->items[0]);
            d->items.push_back(kv->items[1]);
          }
        }
        return d;
      }
      case Fn::Size: {
        Value* t = make(Value::Tuple);
        if (!a.empty() && (a[0]->kind == Value::Tuple || a[0]->kind == Value::List)) t->items = a[0]->items;
        return t;
      }
      case Fn::RebuildTensor: {  // (storage, storage_offset, size, stride, ...)
        auto tr = std::make_unique<TensorRef>();
        if (a.size() < 4 || a[0]->kind != Value::Storage || !is_int(a[1]) || !int_tuple(a[2], &tr->size) ||
            !int_tuple(a[3], &tr->stride))
          err(fn->s + ": unexpected arguments");
        tr->storage = a[0];
        tr->offset = a[1]->i;
        Value* v = make(Value::TensorV);
        v->t = std::move(tr);
        return v;
      }
      case Fn::RebuildParameter:  // (tensor, requires_grad, hooks[, state])
        if (a.empty() || a[0]->kind != Value::TensorV) err(fn->s + ": unexpected arguments");
        return a[0];
      case Fn::Inert: return make(Value::Opaque);
      default: err("'" + fn->s + "' is not callable here");
    }
  }

  // ('storage', <torch.XStorage>, key, location, numel)
  Value* persistent(Value* pid) {
    const auto& a = pid->items;
    if (pid->kind != Value::Tuple || a.size() < 5 || a[0]->kind != Value::Str || a[0]->s != "storage" ||
        a[1]->kind != Value::Global || a[1]->fn != Fn::StorageClass || a[2]->kind != Value::Str || !is_int(a[4]) ||
        a[4]->i < 0)
      err("unsupported persistent id (expected ('storage', torch.XStorage, key, location, numel))");
    if (a[1]->st == SType::Unsupported) err("storage type '" + a[1]->s + "' is not supported");
    Value* v = make(Value::Storage);
    v->st = a[1]->st;
    v->s = a[2]->s;
    v->i = a[4]->i;
    return v;
  }
};

// Turns TensorRefs into Tensors, loading each storage once.
class Materializer {
 public:
  Materializer(const StorageLoader& load, const VM& vm) : load_(load), vm_(vm) {}

  // One Tensor per TensorRef (a tensor reachable under several names is shared, not copied again).
  Tensor operator()(const std::string& key, const TensorRef& r) {
    auto it = done_.find(&r);
    if (it != done_.end()) return it->second;
    Tensor t = build(key, r);
    done_[&r] = t;
    return t;
  }

  size_t visits = 0;  // flatten() budget

 private:
  const StorageLoader& load_;
  const VM& vm_;
  std::map<std::string, TorchStorage> cache_;
  std::map<const TensorRef*, Tensor> done_;

  Tensor build(const std::string& key, const TensorRef& r) {
    const Value* s = r.storage;
    size_t es = stype_size(s->st);
    auto bad = [&](const std::string& what) { vm_.err("tensor '" + key + "': " + what); };
    if (r.size.size() != r.stride.size()) bad("size and stride differ in length");
    if (r.offset < 0) bad("negative storage offset");
    const uint64_t lim = 1ull << 40;
    uint64_t numel = 1;
    unsigned __int128 last = (uint64_t)r.offset;  // last element index touched (cannot overflow: < 2^104)
    for (size_t k = 0; k < r.size.size(); ++k) {
      int64_t n = r.size[k], st = r.stride[k];
      if (n < 0 || st < 0) bad("negative size or stride");
      if ((uint64_t)n > lim || (n && numel > lim / (uint64_t)n)) bad("shape is implausibly large");
      numel *= (uint64_t)n;
      if (n > 1) {
        if ((uint64_t)st > lim) bad("stride is implausibly large");
        last += (unsigned __int128)(uint64_t)(n - 1) * (uint64_t)st;
      }
    }
    DType dt = s->st == SType::F32 || s->st == SType::F64 ? DType::F32
             : s->st == SType::F16                        ? DType::F16
             : s->st == SType::BF16                       ? DType::BF16
             : s->st == SType::I64                        ? DType::I64
             : s->st == SType::I32                        ? DType::I32
                                                          : DType::U8;
    if (numel == 0) return Tensor::empty(r.size, dt);
    if ((uint64_t)s->i > lim / 8) bad("storage is implausibly large");
    if (last >= (uint64_t)s->i)
      bad("view (offset " + std::to_string(r.offset) + ", size " + shape_str(r.size) + ") exceeds its storage of " +
          std::to_string(s->i) + " elements");
    const TorchStorage& st = storage(s, es);
    const uint8_t* base = st.data + (size_t)r.offset * es;
    // Contiguous (ignoring size-1 dims), same element type, aligned: a view, no copy.
    bool contiguous = true;
    int64_t expect = 1;
    for (size_t k = r.size.size(); k-- > 0;) {
      if (r.size[k] != 1 && r.stride[k] != expect) contiguous = false;
      expect *= r.size[k];
    }
    if (contiguous && s->st != SType::F64 && (uintptr_t)base % es == 0)
      return Tensor::view_of(const_cast<uint8_t*>(base), r.size, dt, st.owner);
    if (numel > 64 * (uint64_t)s->i + 4096) bad("strided view is implausibly larger than its storage");
    // Gather element by element (odometer over the index), converting f64 -> f32.
    Tensor out = Tensor::empty(r.size, dt);
    uint8_t* o = (uint8_t*)out.raw();
    size_t nd = r.size.size(), oes = dtype_size(dt);
    std::vector<int64_t> idx(nd, 0);
    uint64_t off = 0;  // element offset from base
    for (uint64_t e = 0; e < numel; ++e) {
      const uint8_t* src = base + off * es;
      if (s->st == SType::F64) {
        double x;
        std::memcpy(&x, src, 8);
        float y = (float)x;
        std::memcpy(o + e * oes, &y, 4);
      } else {
        std::memcpy(o + e * oes, src, es);
      }
      for (size_t k = nd; k-- > 0;) {
        if (++idx[k] < r.size[k]) {
          off += (uint64_t)r.stride[k];
          break;
        }
        off -= (uint64_t)(r.size[k] - 1) * (uint64_t)r.stride[k];
        idx[k] = 0;
      }
    }
    return out;
  }

  const TorchStorage& storage(const Value* s, size_t es) {
    auto it = cache_.find(s->s);
    size_t need = (size_t)s->i * es;
    if (it == cache_.end()) {
      TorchStorage t = load_(s->s, need);
      if (t.nbytes < need) vm_.err("storage '" + s->s + "' holds " + std::to_string(t.nbytes) + " bytes, " +
                                   std::to_string(need) + " expected");
      it = cache_.emplace(s->s, std::move(t)).first;
    } else if (it->second.nbytes < need) {  // same key declared again with a larger size
      vm_.err("storage '" + s->s + "' is declared with inconsistent sizes");
    }
    return it->second;
  }
};

bool is_container(const Value* v) {
  return v->kind == Value::Dict || v->kind == Value::List || v->kind == Value::Tuple;
}

std::string key_str(const Value* k, bool* ok) {
  *ok = true;
  if (k->kind == Value::Str) return k->s;
  if (k->kind == Value::Int) return std::to_string(k->i);
  *ok = false;
  return {};
}

void flatten(const Value* v, const std::string& prefix, int depth, Materializer& mat, WeightStore& out) {
  if (depth > kMaxDepth) return;  // with the visit budget, also stops memo cycles
  auto visit = [&](const std::string& key, const Value* x) {
    if (++mat.visits > kMaxValues) fail(W, out.source + ": pickle structure too large to flatten");
    std::string full = prefix.empty() ? key : prefix + "." + key;
    if (full.size() > 4096) fail(W, out.source + ": key too long: '" + full.substr(0, 64) + "...'");
    if (x->kind == Value::TensorV) out.tensors[full] = mat(full, *x->t);
    else if (is_container(x)) flatten(x, full, depth + 1, mat, out);
  };
  if (v->kind == Value::Dict) {
    for (size_t j = 0; j + 1 < v->items.size(); j += 2) {
      bool ok;
      std::string k = key_str(v->items[j], &ok);
      if (ok) visit(k, v->items[j + 1]);
    }
  } else {
    for (size_t j = 0; j < v->items.size(); ++j) visit(std::to_string(j), v->items[j]);
  }
}

const Value* dict_get(const Value* d, const std::string& key) {
  const Value* found = nullptr;  // last one wins, as in Python
  for (size_t j = 0; j + 1 < d->items.size(); j += 2)
    if (d->items[j]->kind == Value::Str && d->items[j]->s == key) found = d->items[j + 1];
  return found;
}

}  // namespace

WeightStore unpickle_state_dict(const uint8_t* pkl, size_t size, const StorageLoader& load, const std::string& name) {
  VM vm(pkl, size, name);
  const Value* top = vm.run();
  if (top->kind != Value::Dict) vm.err("the pickle holds no dict of tensors");
  const Value* root = top;
  for (const char* k : {"state_dict", "model", "module"}) {
    const Value* v = dict_get(top, k);
    if (v && v->kind == Value::Dict) {
      root = v;
      break;
    }
  }
  WeightStore out;
  out.source = name;
  for (size_t j = 0; j + 1 < top->items.size(); j += 2) {  // scalars: epoch, global_step, ...
    const Value *k = top->items[j], *v = top->items[j + 1];
    if (k->kind != Value::Str) continue;
    if (v->kind == Value::Str) out.metadata[k->s] = v->s;
    else if (v->kind == Value::Int) out.metadata[k->s] = std::to_string(v->i);
    else if (v->kind == Value::Bool) out.metadata[k->s] = v->i ? "True" : "False";
    else if (v->kind == Value::Float && std::isfinite(v->f)) out.metadata[k->s] = std::to_string(v->f);
  }
  Materializer mat(load, vm);
  flatten(root, "", 0, mat, out);
  return out;
}

}  // namespace easel
