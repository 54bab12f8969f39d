#include "core/tensor.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdlib>
#include <sstream>

namespace easel {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I64: return "i64";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "?";
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); i++) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

static std::shared_ptr<void> alloc_aligned(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) fail("tensor", "out of memory allocating " + std::to_string(bytes) + " bytes");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (auto d : shape)
    if (d < 0) fail("tensor", "negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.owner_ = alloc_aligned(t.nbytes());
  t.data_ = t.owner_.get();
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view_of(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  if ((int64_t)v.size() != shape_numel(shape))
    fail("tensor", "from_vector: " + std::to_string(v.size()) + " values for shape " + shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.data_, v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == -1) infer = (int64_t)i;
    else known *= s[i];
  }
  if (infer >= 0) s[infer] = known ? numel() / known : 0;
  if (shape_numel(s) != numel())
    fail("tensor", "cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype_) return *this;
  auto is_float = [](DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; };
  if (!is_float(target) || !is_float(dtype_))
    fail("tensor", std::string("unsupported conversion ") + dtype_name(dtype_) + " -> " + dtype_name(target));
  Tensor t = empty(shape_, target);
  if (dtype_ == DType::F32) {
    convert_from_f32(data<float>(), t.data_, target, numel());
  } else if (target == DType::F32) {
    convert_to_f32(data_, dtype_, t.data<float>(), numel());
  } else {
    Tensor tmp = to(DType::F32);
    return tmp.to(target);
  }
  return t;
}

Tensor Tensor::slice0(int64_t start, int64_t len) const {
  if (dim() == 0 || start < 0 || len < 0 || start + len > shape_[0])
    fail("tensor", "slice0 out of range on " + str());
  Shape s = shape_;
  s[0] = len;
  Tensor t = empty(s, dtype_);
  size_t row = nbytes() / std::max<int64_t>(shape_[0], 1);
  std::memcpy(t.data_, (const char*)data_ + row * start, row * len);
  return t;
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(numel());
  if (dtype_ == DType::F32) std::memcpy(v.data(), data_, nbytes());
  else convert_to_f32(data_, dtype_, v.data(), numel());
  return v;
}

void Tensor::check_dtype(DType t) const {
  if (dtype_ != t)
    fail("tensor", std::string("expected ") + dtype_name(t) + " tensor, got " + str());
}

std::string Tensor::str() const { return std::string(dtype_name(dtype_)) + shape_str(shape_); }

float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) u = sign;
    else {  // subnormal
      float f = std::ldexp((float)mant, -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000 | (mant << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t absu = u & 0x7fffffff;
  if (absu >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (absu > 0x7f800000 ? 0x200 : 0));
  if (absu >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // overflow -> inf
  if (absu < 0x38800000) {  // subnormal or zero in half
    float a;
    std::memcpy(&a, &absu, 4);
    float scaled = a * 16777216.0f;  // 2^24
    uint32_t m = (uint32_t)std::nearbyint(scaled);
    return (uint16_t)(sign | m);
  }
  uint32_t exp = ((absu >> 23) - 112) << 10;
  uint32_t mant = absu & 0x7fffff;
  uint32_t h = exp | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);  // NaN
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

void convert_to_f32(const void* src, DType t, float* dst, int64_t n) {
  if (t == DType::F16) {
    const uint16_t* s = (const uint16_t*)src;
    int64_t done = 0;
#if defined(__F16C__)
    // vcvtph2ps: exact for every f16 value (subnormals, inf, NaN), 8 per instruction.
    done = n / 8 * 8;
#pragma omp parallel for if (done > (1 << 20))
    for (int64_t i = 0; i < done; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i))));
#endif
#pragma omp parallel for if (n - done > 65536)
    for (int64_t i = done; i < n; i++) dst[i] = half_to_float(s[i]);
  } else if (t == DType::BF16) {
    const uint16_t* s = (const uint16_t*)src;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(s[i]);
  } else if (t == DType::F32) {
    std::memcpy(dst, src, n * 4);
  } else {
    fail("tensor", std::string("cannot convert ") + dtype_name(t) + " to f32");
  }
}

void convert_from_f32(const float* src, void* dst, DType t, int64_t n) {
  if (t == DType::F16) {
    uint16_t* d = (uint16_t*)dst;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) d[i] = float_to_half(src[i]);
  } else if (t == DType::BF16) {
    uint16_t* d = (uint16_t*)dst;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) d[i] = float_to_bf16(src[i]);
  } else if (t == DType::F32) {
    std::memcpy(dst, src, n * 4);
  } else {
    fail("tensor", std::string("cannot convert f32 to ") + dtype_name(t));
  }
}

}  // namespace easel
