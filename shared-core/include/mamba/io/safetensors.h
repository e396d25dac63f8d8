// The safetensors format: reading (memory-mapped, validated) and writing (atomic).
//
// Layout of a file: 8 bytes little-endian header length N, then N bytes of JSON header
// (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}, plus an
// optional "__metadata__" string -> string object), then the data section. Offsets are
// relative to the start of the data section; each tensor is stored contiguous, row-major,
// little-endian.
//
// Reading: SafeTensorsFile maps the whole file read-only-from-disk (MAP_PRIVATE, so a
// write through a returned tensor changes a private copy of the page, never the file) and
// validates the complete header in the constructor. A file that does not pass throws
// mamba::Error "safetensors: '<path>': <field or tensor>: <what is wrong>"; no input can
// make the reader read outside the mapping. tensor(name) returns a Tensor that borrows
// the mapping (zero copy); the mapping stays alive while the SafeTensorsFile or any such
// tensor exists. A tensor whose data is not aligned to its element size is copied instead.
//
// Accepted: gaps between tensors and bytes after the last one are allowed (the reference
// writer never produces them). Duplicate keys anywhere in the header are rejected.
// Dtypes: F32 F64 BF16 F16 I32 I64 U8 load; BOOL I8 I16 U16 U32 U64 F8_E4M3 F8_E5M2 are
// valid in a file (info() describes them) but tensor() throws "unsupported dtype".
//
// Caveat: a file truncated by another process while it is mapped makes later reads of
// the lost pages fault (SIGBUS); model directories are replaced by rename(), never
// rewritten in place, so a mapped file is never truncated.
//
// Thread-safety: a SafeTensorsFile is immutable after construction; all const methods may
// be called from several threads.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::io {

// One tensor as described by the header.
struct TensorInfo {
  std::string name;
  std::string dtype_name;       // as written in the file: "F32", "BF16", "BOOL", ...
  std::optional<DType> dtype;   // empty for a dtype this library cannot hold
  size_t element_size = 0;      // bytes per element of dtype_name
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range, relative to the data section
  uint64_t file_offset = 0;     // absolute offset of `begin` in the file
  uint64_t nbytes() const { return end - begin; }
};

// Upper bound on the JSON header, well above any real checkpoint's (a few MB).
inline constexpr uint64_t kMaxSafeTensorsHeaderBytes = 100ull << 20;

class SafeTensorsFile {
 public:
  // Maps and validates `path`. Throws mamba::Error on I/O errors and invalid files.
  explicit SafeTensorsFile(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(SafeTensorsFile&&) noexcept;
  SafeTensorsFile& operator=(SafeTensorsFile&&) noexcept;

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // in header order
  size_t size() const { return names_.size(); }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws for an unknown name
  // The tensor, borrowing the mapping (or a copy when misaligned). Throws for an unknown
  // name or an unsupported dtype.
  Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::vector<std::string> names_;
  std::vector<TensorInfo> infos_;  // same order as names_
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Convenience: every tensor of a file, in header order.
std::vector<std::pair<std::string, Tensor>> load_safetensors(const std::string& path);

// Writes `tensors` (in the given order) and `metadata` to `path` atomically (see
// atomic_file.h). Tensors may be of any supported dtype and any layout (written as
// contiguous row-major copies) and must live on the CPU. Names must be non-empty, unique
// and not "__metadata__". Header padded with spaces so the data section starts at a
// multiple of 8 bytes. Throws mamba::Error naming the path (and tensor) on failure.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// "F32" <-> DType::f32 etc. dtype_from_safetensors returns nullopt for names it does not know.
const char* safetensors_dtype_name(DType dt);
std::optional<DType> dtype_from_safetensors(const std::string& name);

}  // namespace mamba::io
