// Frozen model weights: memory-mapped safetensors files, read in place when fp32 and aligned,
// otherwise converted once to fp32 (bf16 / fp16 files).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace claas {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

struct TensorSource {
  std::string file;     // path of the safetensors file
  uint64_t offset = 0;  // absolute byte offset of the data in the file
  uint64_t count = 0;   // number of elements
  DType dtype = DType::F32;
};

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class WeightStore {
 public:
  // Returns fp32 data for the tensor; throws EngineError("E_WEIGHTS") if it lies outside its file.
  const float* load(const TensorSource& src);
  // Bytes of converted copies (mapped fp32 tensors are read in place and belong to the page cache).
  size_t bytes() const { return ownedBytes_; }

 private:
  MappedFile& file(const std::string& path);
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<std::unique_ptr<float[]>> owned_;
  size_t ownedBytes_ = 0;
};

float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

}  // namespace claas
