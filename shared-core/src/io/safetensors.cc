#include "mamba/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "mamba/io/atomic_file.h"

namespace mamba::io {
namespace {

using json = nlohmann::json;

constexpr const char* kOp = "safetensors";
constexpr int kMaxHeaderDepth = 64;  // real headers nest 3 deep

struct DTypeEntry {
  const char* name;
  size_t size;
  std::optional<DType> dtype;
};

// Every dtype name the format defines with a whole-byte element size.
constexpr DTypeEntry kDTypes[] = {
    {"F32", 4, DType::f32},       {"F64", 8, DType::f64},       {"BF16", 2, DType::bf16},
    {"F16", 2, DType::f16},       {"I32", 4, DType::i32},       {"I64", 8, DType::i64},
    {"U8", 1, DType::u8},         {"BOOL", 1, std::nullopt},    {"I8", 1, std::nullopt},
    {"I16", 2, std::nullopt},     {"U16", 2, std::nullopt},     {"U32", 4, std::nullopt},
    {"U64", 8, std::nullopt},     {"F8_E4M3", 1, std::nullopt}, {"F8_E5M2", 1, std::nullopt},
};

const DTypeEntry* find_dtype(const std::string& name) {
  for (const auto& e : kDTypes)
    if (name == e.name) return &e;
  return nullptr;
}

std::string json_kind(const json& j) {
  if (j.is_number_unsigned() || j.is_number_integer()) return "integer " + j.dump();
  if (j.is_number_float()) return "number " + j.dump();
  return std::string(j.type_name());
}

}  // namespace

const char* safetensors_dtype_name(DType dt) {
  for (const auto& e : kDTypes)
    if (e.dtype == dt) return e.name;
  fail(kOp, "dtype has no safetensors name");
}

std::optional<DType> dtype_from_safetensors(const std::string& name) {
  const DTypeEntry* e = find_dtype(name);
  return e ? e->dtype : std::nullopt;
}

// ---- reading ---------------------------------------------------------------------------

struct SafeTensorsFile::Mapping {
  void* base = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (base) ::munmap(base, size);
  }
};

namespace {

// Parses the header, recording the top-level keys in file order and rejecting duplicate
// keys in any object (nlohmann keeps only the last of a duplicate silently).
json parse_header(const std::string& path, const char* text, size_t len, std::vector<std::string>& top_keys) {
  std::vector<std::set<std::string>> objects;  // keys seen in each open object
  std::vector<bool> is_object;                 // kind of each open container
  auto where = [&](const std::string& msg) { return "'" + path + "': header: " + msg; };
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxHeaderDepth) fail(kOp, where("nested deeper than " + std::to_string(kMaxHeaderDepth)));
        is_object.push_back(ev == json::parse_event_t::object_start);
        if (is_object.back()) objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!is_object.empty()) {
          if (is_object.back()) objects.pop_back();
          is_object.pop_back();
        }
        break;
      case json::parse_event_t::key: {
        const std::string key = parsed.get<std::string>();
        if (!objects.empty() && !objects.back().insert(key).second)
          fail(kOp, where("duplicate key '" + key + "'"));
        if (objects.size() == 1) top_keys.push_back(key);
        break;
      }
      case json::parse_event_t::value: break;
    }
    return true;
  };
  try {
    return json::parse(text, text + len, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    fail(kOp, where(std::string("not valid JSON: ") + e.what()));
  }
}

// A JSON value that must be a non-negative integer fitting in int64.
uint64_t nonneg_int(const json& v, const std::function<std::string(const std::string&)>& where,
                    const std::string& field) {
  if (v.is_number_unsigned()) {
    const uint64_t x = v.get<uint64_t>();
    if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(kOp, where(field + " is too large (" + v.dump() + ")"));
    return x;
  }
  if (v.is_number_integer()) fail(kOp, where(field + " is negative (" + v.dump() + ")"));
  fail(kOp, where(field + " must be a non-negative integer, got " + json_kind(v)));
}

}  // namespace

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(kOp, "cannot open '" + path + "': " + std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(kOp, "cannot stat '" + path + "': " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(kOp, "'" + path + "' is not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(kOp, "'" + path + "': file is " + std::to_string(size) +
                  " bytes, shorter than the 8-byte header length field");
  }
  auto mapping = std::make_shared<Mapping>();
  // MAP_PRIVATE + PROT_WRITE: tensors handed out are writable, but writes land in private
  // copy-on-write pages and never reach the file.
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (base == MAP_FAILED) fail(kOp, "cannot mmap '" + path + "': " + std::strerror(map_err));
  mapping->base = base;
  mapping->size = size;
  const auto* bytes = static_cast<const unsigned char*>(base);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxSafeTensorsHeaderBytes)
    fail(kOp, "'" + path + "': header length " + std::to_string(header_len) + " exceeds the limit of " +
                  std::to_string(kMaxSafeTensorsHeaderBytes) + " bytes");
  if (header_len > size - 8)
    fail(kOp, "'" + path + "': header length " + std::to_string(header_len) + " is larger than the " +
                  std::to_string(size - 8) + " bytes after the length field (file truncated?)");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;

  std::vector<std::string> keys;
  const json header = parse_header(path, reinterpret_cast<const char*>(bytes + 8), header_len, keys);
  if (!header.is_object()) fail(kOp, "'" + path + "': header: must be a JSON object, got " + json_kind(header));

  for (const std::string& name : keys) {
    const json& entry = header.at(name);
    if (name == "__metadata__") {
      auto where = [&](const std::string& m) { return "'" + path + "': __metadata__: " + m; };
      if (!entry.is_object()) fail(kOp, where("must be an object of strings, got " + json_kind(entry)));
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(kOp, where("value of '" + k + "' must be a string, got " + json_kind(v)));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    std::function<std::string(const std::string&)> where = [&](const std::string& m) {
      return "'" + path + "': tensor '" + name + "': " + m;
    };
    if (!entry.is_object()) fail(kOp, where("entry must be an object, got " + json_kind(entry)));
    TensorInfo info;
    info.name = name;

    const auto dt = entry.find("dtype");
    if (dt == entry.end()) fail(kOp, where("missing 'dtype'"));
    if (!dt->is_string()) fail(kOp, where("'dtype' must be a string, got " + json_kind(*dt)));
    info.dtype_name = dt->get<std::string>();
    const DTypeEntry* de = find_dtype(info.dtype_name);
    if (!de) fail(kOp, where("unknown dtype '" + info.dtype_name + "'"));
    info.dtype = de->dtype;
    info.element_size = de->size;

    const auto sh = entry.find("shape");
    if (sh == entry.end()) fail(kOp, where("missing 'shape'"));
    if (!sh->is_array()) fail(kOp, where("'shape' must be an array, got " + json_kind(*sh)));
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < sh->size(); ++i) {
      const uint64_t d = nonneg_int((*sh)[i], where, "shape[" + std::to_string(i) + "]");
      info.shape.push_back(static_cast<int64_t>(d));
      overflow |= __builtin_mul_overflow(numel, d, &numel);
    }
    uint64_t expect_bytes = 0;
    overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(de->size), &expect_bytes);
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(kOp, where("shape " + sh->dump() + " has too many elements"));

    const auto off = entry.find("data_offsets");
    if (off == entry.end()) fail(kOp, where("missing 'data_offsets'"));
    if (!off->is_array() || off->size() != 2)
      fail(kOp, where("'data_offsets' must be an array of two integers, got " + off->dump()));
    info.begin = nonneg_int((*off)[0], where, "data_offsets[0]");
    info.end = nonneg_int((*off)[1], where, "data_offsets[1]");
    if (info.begin > info.end)
      fail(kOp, where("data_offsets begin " + std::to_string(info.begin) + " > end " + std::to_string(info.end)));
    if (info.end - info.begin != expect_bytes)
      fail(kOp, where("data_offsets cover " + std::to_string(info.end - info.begin) + " bytes but " +
                      info.dtype_name + " shape " + sh->dump() + " needs " + std::to_string(expect_bytes)));
    if (info.end > data_size)
      fail(kOp, where("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                      ") run past the end of the data section (" + std::to_string(data_size) +
                      " bytes; file truncated?)"));
    info.file_offset = data_start + info.begin;
    index_.emplace(name, infos_.size());
    names_.push_back(name);
    infos_.push_back(std::move(info));
  }

  // Overlap check: sort the non-empty ranges by start; each must begin at or after the
  // previous one's end.
  std::vector<const TensorInfo*> by_begin;
  for (const auto& i : infos_)
    if (i.nbytes() > 0) by_begin.push_back(&i);
  std::sort(by_begin.begin(), by_begin.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const TensorInfo& a = *by_begin[i - 1];
    const TensorInfo& b = *by_begin[i];
    if (b.begin < a.end)
      fail(kOp, "'" + path + "': tensor '" + b.name + "' [" + std::to_string(b.begin) + ", " +
                    std::to_string(b.end) + ") overlaps tensor '" + a.name + "' [" + std::to_string(a.begin) +
                    ", " + std::to_string(a.end) + ")");
  }
  mapping_ = std::move(mapping);
}

SafeTensorsFile::~SafeTensorsFile() = default;
SafeTensorsFile::SafeTensorsFile(SafeTensorsFile&&) noexcept = default;
SafeTensorsFile& SafeTensorsFile::operator=(SafeTensorsFile&&) noexcept = default;

uint64_t SafeTensorsFile::file_size() const { return mapping_ ? mapping_->size : 0; }

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) fail(kOp, "'" + path_ + "': no tensor named '" + name + "'");
  return infos_[it->second];
}

Tensor SafeTensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  if (!ti.dtype)
    fail(kOp, "'" + path_ + "': tensor '" + name + "': unsupported dtype '" + ti.dtype_name +
                  "' (supported: F32, F64, BF16, F16, I32, I64, U8)");
  const DType dt = *ti.dtype;
  char* ptr = static_cast<char*>(mapping_->base) + ti.file_offset;
  const size_t n = static_cast<size_t>(ti.nbytes());
  if (reinterpret_cast<uintptr_t>(ptr) % dtype_size(dt) != 0) {
    Tensor t = Tensor::empty(ti.shape, dt);
    if (n) std::memcpy(t.raw_data(), ptr, n);
    return t;
  }
  auto storage = std::make_shared<Storage>(ptr, n, std::shared_ptr<void>(mapping_));
  return Tensor::from_storage(std::move(storage), 0, ti.shape, Tensor::contiguous_strides(ti.shape), dt);
}

std::vector<std::pair<std::string, Tensor>> load_safetensors(const std::string& path) {
  SafeTensorsFile f(path);
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(f.size());
  for (const auto& name : f.names()) out.emplace_back(name, f.tensor(name));
  return out;
}

// ---- writing ---------------------------------------------------------------------------

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  auto where = [&](const std::string& m) { return "cannot write '" + path + "': " + m; };
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& md = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
  }
  std::vector<Tensor> data;
  data.reserve(tensors.size());
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) fail(kOp, where("empty tensor name"));
    if (name == "__metadata__") fail(kOp, where("'__metadata__' is reserved and cannot name a tensor"));
    if (!seen.insert(name).second) fail(kOp, where("duplicate tensor name '" + name + "'"));
    if (!t.defined()) fail(kOp, where("tensor '" + name + "' is undefined"));
    if (!t.device().is_cpu())
      fail(kOp, where("tensor '" + name + "' is on " + t.device().str() + "; copy it to the CPU first"));
    Tensor c = t.contiguous();
    const uint64_t n = c.nbytes();
    auto& e = header[name] = nlohmann::ordered_json::object();
    e["dtype"] = safetensors_dtype_name(c.dtype());
    e["shape"] = c.shape();
    e["data_offsets"] = {offset, offset + n};
    offset += n;
    data.push_back(std::move(c));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(kOp, where(std::string("a name or metadata string is not valid UTF-8: ") + e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((uint64_t{text.size()} >> (8 * i)) & 0xff);

  AtomicFileWriter w(path);
  w.write(len, 8);
  w.write(text);
  for (const Tensor& c : data)
    if (c.nbytes()) w.write(c.raw_data(), c.nbytes());
  w.commit();
}

}  // namespace mamba::io
