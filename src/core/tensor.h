// Tensor: a contiguous, row-major (PyTorch layout) n-d array with shared storage.
// Activations are NCHW, conv weights OIHW, linear weights [out, in], as in checkpoints.
// Storage may be owned (heap) or borrowed from a memory-mapped file (kept alive by `owner`).
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace easel {

enum class DType : uint8_t { F32, F16, BF16, I64, I32, U8 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // New zero-filled tensor (64-byte aligned).
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  // New uninitialised tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  // Borrow external memory; `owner` keeps it alive (e.g. an mmap).
  static Tensor view_of(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);

  bool defined() const { return data_ != nullptr || (!shape_.empty() && numel() == 0); }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return (int64_t)shape_.size(); }
  int64_t size(int64_t d) const { return shape_[d < 0 ? d + dim() : d]; }
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <class T> T* data() { return static_cast<T*>(data_); }
  template <class T> const T* data() const { return static_cast<const T*>(data_); }
  float* f32() { check_dtype(DType::F32); return data<float>(); }
  const float* f32() const { check_dtype(DType::F32); return data<float>(); }

  // Same storage, new shape (numel must match). One dim may be -1.
  Tensor reshape(const Shape& shape) const;
  // Deep copy.
  Tensor clone() const;
  // Converted copy (or *this when already that dtype). Float types only.
  Tensor to(DType t) const;
  // Copy of the slice [start, start+len) along dim 0 (contiguous, cheap).
  Tensor slice0(int64_t start, int64_t len) const;
  std::vector<float> to_vector() const;  // converts to f32

  void check_dtype(DType t) const;
  std::string str() const;  // "f32[2, 4, 8, 8]"

 private:
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// fp16/bf16 scalar conversions (IEEE round-to-nearest-even, as torch).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
inline float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f);
// Bulk conversions.
void convert_to_f32(const void* src, DType src_type, float* dst, int64_t n);
void convert_from_f32(const float* src, void* dst, DType dst_type, int64_t n);

}  // namespace easel
