// Memory-mapped safetensors data and fp16 / bf16 to fp32 conversion.
#include "engine/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "engine/errors.h"

namespace claas {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw EngineError("E_WEIGHTS", "cannot open weights file " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw EngineError("E_WEIGHTS", "cannot stat weights file " + path);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw EngineError("E_WEIGHTS", "cannot map weights file " + path + ": " + std::strerror(errno));
    }
    data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

MappedFile& WeightStore::file(const std::string& path) {
  for (auto& f : files_) {
    if (f->path() == path) return *f;
  }
  files_.push_back(std::make_unique<MappedFile>(path));
  return *files_.back();
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const float* WeightStore::load(const TensorSource& src) {
  MappedFile& f = file(src.file);
  const size_t elem = src.dtype == DType::F32 ? 4 : 2;
  const uint64_t bytes = src.count * elem;
  if (src.offset > f.size() || bytes > f.size() - src.offset) {
    throw EngineError("E_WEIGHTS", "tensor data lies outside " + src.file + " (file truncated?)");
  }
  const uint8_t* p = f.data() + src.offset;
  if (src.dtype == DType::F32 && reinterpret_cast<uintptr_t>(p) % alignof(float) == 0) {
    return reinterpret_cast<const float*>(p);
  }
  std::unique_ptr<float[]> out(new float[src.count]);
  for (uint64_t i = 0; i < src.count; ++i) {
    if (src.dtype == DType::F32) {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = src.dtype == DType::F16 ? half_to_float(h) : bf16_to_float(h);
    }
  }
  owned_.push_back(std::move(out));
  ownedBytes_ += src.count * sizeof(float);
  return owned_.back().get();
}

}  // namespace claas
