// safetensors reader/writer: round trips, the golden files, and malformed input.
#include "mamba/io/safetensors.h"

#include "mamba/io/atomic_file.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using mamba::DType;
using mamba::Tensor;
using mamba::io::SafeTensorsFile;

namespace {

std::string tmp_dir() {
  const fs::path d = fs::path(MAMBA_TEST_TMP) / "safetensors";
  fs::create_directories(d);
  return d.string();
}

std::string golden(const char* name) { return std::string(MAMBA_SHARED_DIR) + "/golden/" + name; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A file from a header text and `data_bytes` bytes of data (0, 1, 2, ...).
std::string make_file(const std::string& header, size_t data_bytes) {
  std::string s = le64(header.size()) + header;
  for (size_t i = 0; i < data_bytes; ++i) s.push_back(static_cast<char>(i & 0xff));
  return s;
}

// Bytes of a tensor's elements in row-major order.
std::string tensor_bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

Tensor patterned(const mamba::Shape& shape, DType dt, unsigned seed) {
  Tensor t = Tensor::empty(shape, dt);
  auto* p = static_cast<unsigned char*>(t.raw_data());
  std::mt19937 rng(seed);
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}

// Expects opening (and loading every tensor of) `bytes` to throw mamba::Error whose
// message contains each of `needles`.
void expect_bad(const std::string& bytes, std::vector<std::string> needles, const std::string& label) {
  // One file per test: ctest runs the tests of this binary in parallel processes.
  const std::string path =
      tmp_dir() + "/bad." + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".safetensors";
  write_bytes(path, bytes);
  try {
    auto all = mamba::io::load_safetensors(path);
    ADD_FAILURE() << label << ": expected mamba::Error, file was accepted";
  } catch (const mamba::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << label << ": message lacks the path: " << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << label << ": '" << n << "' not in: " << msg;
  }
}

const DType kAllDTypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};

}  // namespace

TEST(SafeTensors, RoundTripEveryDTypeAndLayout) {
  std::vector<std::pair<std::string, Tensor>> in;
  unsigned seed = 1;
  for (DType dt : kAllDTypes) {
    const std::string n = mamba::dtype_name(dt);
    in.emplace_back("plain." + n, patterned({3, 5}, dt, seed++));
    in.emplace_back("transposed." + n, patterned({4, 3, 2}, dt, seed++).transpose(0, 2));
    in.emplace_back("strided." + n, patterned({9, 4}, dt, seed++).slice(0, 1, 8, 3));
    in.emplace_back("scalar." + n, patterned({}, dt, seed++));
    in.emplace_back("empty." + n, Tensor::empty({0, 7}, dt));
  }
  in.emplace_back("odd.u8", patterned({3}, DType::u8, 99));  // misaligns what follows, pre-padding
  in.emplace_back("after_odd.f64", patterned({2, 2}, DType::f64, 100));
  const std::map<std::string, std::string> md = {{"format", "pt"}, {"config", "{\"d_model\": 16}"}, {"", "empty key"}};
  const std::string path = tmp_dir() + "/roundtrip.safetensors";
  mamba::io::save_safetensors(path, in, md);

  const auto bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-aligned";

  SafeTensorsFile f(path);
  EXPECT_EQ(f.metadata(), md);
  ASSERT_EQ(f.names().size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const auto& [name, t] = in[i];
    EXPECT_EQ(f.names()[i], name) << "header order must follow the input order";
    ASSERT_TRUE(f.has(name));
    const auto& info = f.info(name);
    EXPECT_EQ(info.dtype_name, mamba::io::safetensors_dtype_name(t.dtype()));
    EXPECT_EQ(info.shape, t.shape());
    Tensor r = f.tensor(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(r.shape(), t.shape()) << name;
    EXPECT_TRUE(r.is_contiguous());
    EXPECT_EQ(tensor_bytes(r), tensor_bytes(t)) << name;
  }
  EXPECT_FALSE(f.has("missing"));
  EXPECT_THROW(f.info("missing"), mamba::Error);
  EXPECT_THROW(f.tensor("missing"), mamba::Error);
  // No temp files of this target left next to it (other tests of this binary write their own
  // files in the same directory, possibly at this moment: ctest runs them in parallel).
  for (const auto& e : fs::directory_iterator(tmp_dir()))
    EXPECT_NE(e.path().filename().string().rfind("roundtrip.safetensors.tmp.", 0), 0u) << e.path();
}

TEST(SafeTensors, NoMetadataWritesNoMetadataKey) {
  const std::string path = tmp_dir() + "/nometa.safetensors";
  mamba::io::save_safetensors(path, {{"w", Tensor::full({2}, 1.5)}});
  EXPECT_EQ(read_bytes(path).find("__metadata__"), std::string::npos);
  SafeTensorsFile f(path);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.tensor("w").to_vector_f32(), (std::vector<float>{1.5f, 1.5f}));
}

TEST(SafeTensors, OverwriteIsAtomicReplacement) {
  const std::string path = tmp_dir() + "/overwrite.safetensors";
  mamba::io::save_safetensors(path, {{"a", Tensor::full({4}, 1.0)}});
  SafeTensorsFile old_file(path);
  Tensor old_a = old_file.tensor("a");
  mamba::io::save_safetensors(path, {{"b", Tensor::full({2}, 2.0)}});
  // The old mapping still sees the old inode's data.
  EXPECT_EQ(old_a.to_vector_f32(), (std::vector<float>(4, 1.0f)));
  SafeTensorsFile f(path);
  EXPECT_FALSE(f.has("a"));
  EXPECT_EQ(f.tensor("b").to_vector_f32(), (std::vector<float>(2, 2.0f)));
}

TEST(SafeTensors, TensorsOutliveTheFileObject) {
  std::vector<Tensor> kept;
  {
    SafeTensorsFile f(golden("mamba1_block.safetensors"));
    for (const auto& n : f.names()) kept.push_back(f.tensor(n));
  }
  SafeTensorsFile again(golden("mamba1_block.safetensors"));
  ASSERT_EQ(kept.size(), again.names().size());
  for (size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(tensor_bytes(kept[i]), tensor_bytes(again.tensor(again.names()[i])));
}

TEST(SafeTensors, AlignedTensorsBorrowTheMapping) {
  SafeTensorsFile f(golden("mamba1_block.safetensors"));
  Tensor a = f.tensor("weights.in_proj.weight");
  Tensor b = f.tensor("weights.in_proj.weight");
  EXPECT_EQ(a.raw_data(), b.raw_data()) << "zero copy: both views of the same mapped bytes";
  EXPECT_EQ(a.storage()->bytes(), 64u * 16u * 4u);
}

TEST(SafeTensors, WritesToABorrowedTensorNeverReachTheFile) {
  const std::string path = tmp_dir() + "/cow.safetensors";
  mamba::io::save_safetensors(path, {{"w", Tensor::full({8}, 3.0)}});
  const std::string before = read_bytes(path);
  {
    SafeTensorsFile f(path);
    Tensor w = f.tensor("w");
    w.fill(-1.0);
    EXPECT_EQ(w.to_vector_f32(), std::vector<float>(8, -1.0f));
  }
  EXPECT_EQ(read_bytes(path), before);
}

TEST(SafeTensors, MisalignedDataIsCopied) {
  // Header of 5 bytes' worth of padding-free JSON makes the data section start at an odd
  // offset, so the F32 tensor cannot be borrowed in place.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  if ((8 + header.size()) % 2 == 0) header += " ";
  std::string bytes = le64(header.size()) + header + std::string(1, '\x7f');
  const float vals[2] = {1.25f, -7.5f};
  bytes.append(reinterpret_cast<const char*>(vals), sizeof(vals));
  const std::string path = tmp_dir() + "/misaligned.safetensors";
  write_bytes(path, bytes);
  SafeTensorsFile f(path);
  Tensor x = f.tensor("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw_data()) % 4, 0u);
  EXPECT_EQ(x.to_vector_f32(), (std::vector<float>{1.25f, -7.5f}));
}

TEST(SafeTensors, UnsupportedDTypeNamesTheTensor) {
  const std::string header =
      R"({"mask":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  const std::string path = tmp_dir() + "/bool.safetensors";
  write_bytes(path, make_file(header, 8));
  SafeTensorsFile f(path);
  EXPECT_EQ(f.info("mask").dtype_name, "BOOL");
  EXPECT_FALSE(f.info("mask").dtype.has_value());
  EXPECT_EQ(f.tensor("w").shape(), (mamba::Shape{4}));
  try {
    f.tensor("mask");
    FAIL() << "expected an error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported dtype 'BOOL'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'mask'"), std::string::npos) << e.what();
  }
}

TEST(SafeTensors, GoldenFilesLoad) {
  for (const char* name : {"mamba1_block.safetensors", "mamba1_lm.safetensors", "mamba2_block.safetensors",
                           "mamba2_lm.safetensors", "selective_scan.safetensors"}) {
    SafeTensorsFile f(golden(name));
    EXPECT_GT(f.size(), 0u) << name;
    for (const auto& n : f.names()) {
      Tensor t = f.tensor(n);
      EXPECT_TRUE(t.dtype() == DType::f32 || t.dtype() == DType::i64) << name << " " << n;
      if (t.dtype() == DType::f32) {
        for (float v : t.to_vector_f32()) ASSERT_TRUE(std::isfinite(v)) << name << " " << n;
      }
    }
  }
  SafeTensorsFile m1(golden("mamba1_block.safetensors"));
  const auto& ip = m1.info("weights.in_proj.weight");
  EXPECT_EQ(ip.dtype_name, "F32");
  EXPECT_EQ(ip.shape, (mamba::Shape{64, 16}));
  EXPECT_EQ(m1.tensor("weights.in_proj.weight").shape(), (mamba::Shape{64, 16}));
  ASSERT_TRUE(m1.metadata().count("config"));
  EXPECT_NE(m1.metadata().at("config").find("d_model"), std::string::npos);
  // Header order, not alphabetical (nlohmann sorts keys; the reader must not).
  const auto& names = m1.names();
  EXPECT_EQ(names.front(), "conv_state");

  SafeTensorsFile scan(golden("selective_scan.safetensors"));
  EXPECT_TRUE(scan.metadata().count("cases"));

  SafeTensorsFile lm(golden("mamba1_lm.safetensors"));
  EXPECT_EQ(lm.info("input_ids").dtype, DType::i64);
  EXPECT_TRUE(lm.has("backbone.embedding.weight"));
}

TEST(SafeTensors, GoldenFileRewrittenIsIdenticalInContent) {
  SafeTensorsFile f(golden("mamba2_block.safetensors"));
  std::vector<std::pair<std::string, Tensor>> all;
  for (const auto& n : f.names()) all.emplace_back(n, f.tensor(n));
  const std::string path = tmp_dir() + "/rewritten.safetensors";
  mamba::io::save_safetensors(path, all, f.metadata());
  SafeTensorsFile g(path);
  EXPECT_EQ(g.names(), f.names());
  EXPECT_EQ(g.metadata(), f.metadata());
  for (const auto& n : f.names()) EXPECT_EQ(tensor_bytes(g.tensor(n)), tensor_bytes(f.tensor(n))) << n;
}

// ---- malformed files -----------------------------------------------------------------

TEST(SafeTensorsMalformed, TruncatedAtManyLengths) {
  const std::string good = read_bytes(golden("mamba1_block.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  for (size_t len : {size_t{0}, size_t{1}, size_t{7}}) expect_bad(good.substr(0, len), {"shorter than the 8-byte"}, "len");
  for (size_t len : {size_t{8}, size_t{9}, size_t{100}, static_cast<size_t>(8 + n - 1)})
    expect_bad(good.substr(0, len), {"header length", "larger than"}, "header cut");
  // Cut inside the data: the last tensor in the data section runs past the end.
  expect_bad(good.substr(0, good.size() - 1), {"run past the end of the data section"}, "data cut");
  expect_bad(good.substr(0, 8 + n + 3), {"run past the end of the data section"}, "data cut early");
}

TEST(SafeTensorsMalformed, HeaderLengthHuge) {
  expect_bad(le64(~uint64_t{0}) + "{}", {"header length", "exceeds the limit"}, "max u64");
  expect_bad(le64(uint64_t{200} << 20) + "{}", {"exceeds the limit"}, "200 MiB");
  expect_bad(le64(1000) + "{}", {"larger than"}, "past eof");
}

TEST(SafeTensorsMalformed, HeaderNotJsonObject) {
  expect_bad(make_file("{\"a\":", 0), {"header", "not valid JSON"}, "cut json");
  expect_bad(make_file("not json", 0), {"not valid JSON"}, "garbage");
  expect_bad(make_file("", 0), {"not valid JSON"}, "empty header");
  expect_bad(make_file("[1,2]", 0), {"must be a JSON object", "array"}, "array");
  expect_bad(make_file("\"str\"", 0), {"must be a JSON object"}, "string");
  expect_bad(make_file("{} trailing", 0), {"not valid JSON"}, "trailing");
  expect_bad(make_file(std::string(1000, '[') + std::string(1000, ']'), 0), {"nested deeper"}, "deep");
  expect_bad(make_file("{\"a\":\"\xff\xfe\"}", 0), {"not valid JSON"}, "bad utf8");
}

TEST(SafeTensorsMalformed, EntryFields) {
  auto entry = [](const std::string& body) { return make_file("{\"t.w\":" + body + "}", 64); };
  expect_bad(entry("[]"), {"'t.w'", "entry must be an object"}, "entry array");
  expect_bad(entry("7"), {"'t.w'", "entry must be an object"}, "entry number");
  expect_bad(entry(R"({"shape":[2],"data_offsets":[0,8]})"), {"'t.w'", "missing 'dtype'"}, "no dtype");
  expect_bad(entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), {"'t.w'", "'dtype' must be a string"}, "dtype num");
  expect_bad(entry(R"({"dtype":"F33","shape":[2],"data_offsets":[0,8]})"), {"'t.w'", "unknown dtype 'F33'"}, "dtype bad");
  expect_bad(entry(R"({"dtype":"f32","shape":[2],"data_offsets":[0,8]})"), {"unknown dtype 'f32'"}, "dtype case");
  expect_bad(entry(R"({"dtype":"F32","data_offsets":[0,8]})"), {"'t.w'", "missing 'shape'"}, "no shape");
  expect_bad(entry(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), {"'t.w'", "'shape' must be an array"}, "shape int");
  expect_bad(entry(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), {"'t.w'", "shape[0] is negative"}, "neg dim");
  expect_bad(entry(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), {"'t.w'", "shape[0] must be a non-negative integer"}, "float dim");
  expect_bad(entry(R"({"dtype":"F32","shape":[1,"2"],"data_offsets":[0,8]})"), {"shape[1] must be a non-negative integer", "string"}, "str dim");
  expect_bad(entry(R"({"dtype":"F32","shape":[1,null],"data_offsets":[0,8]})"), {"shape[1]"}, "null dim");
  expect_bad(entry(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})"), {"shape[0] is too large"}, "u64 dim");
  expect_bad(entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"), {"'t.w'", "too many elements"}, "overflow");
  expect_bad(entry(R"({"dtype":"F64","shape":[1152921504606846976,2],"data_offsets":[0,8]})"), {"too many elements"}, "byte overflow");
  expect_bad(entry(R"({"dtype":"F32","shape":[2]})"), {"'t.w'", "missing 'data_offsets'"}, "no offsets");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), {"'t.w'", "array of two integers"}, "one offset");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,9]})"), {"array of two integers"}, "three offsets");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":{"a":0}})"), {"array of two integers"}, "offsets object");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), {"'t.w'", "data_offsets[0] is negative"}, "neg begin");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.5]})"), {"data_offsets[1] must be a non-negative integer"}, "float end");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), {"'t.w'", "begin 8 > end 0"}, "reversed");
  expect_bad(entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), {"'t.w'", "cover 8 bytes", "needs 12"}, "mismatch");
  expect_bad(entry(R"({"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]})"), {"needs 8"}, "bf16 mismatch");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[60,68]})"), {"'t.w'", "run past the end"}, "past end");
  expect_bad(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551616]})"),
             {"data_offsets"}, "huge offsets");
}

TEST(SafeTensorsMalformed, OverlapsAndDuplicates) {
  expect_bad(make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
             {"overlaps", "'a'", "'b'"}, "overlap");
  expect_bad(make_file(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},)"
                       R"("a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 16),
             {"overlaps", "'a'", "'b'"}, "same end");
  expect_bad(make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                       R"("a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 16),
             {"duplicate key 'a'"}, "duplicate tensor");
  expect_bad(make_file(R"({"a":{"dtype":"U8","dtype":"F32","shape":[4],"data_offsets":[0,4]}})", 16),
             {"duplicate key 'dtype'"}, "duplicate field");
  // Zero-length tensors never overlap; gaps and trailing bytes are accepted.
  const std::string ok = make_file(R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                   R"("a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                                   R"("g":{"dtype":"U8","shape":[2],"data_offsets":[10,12]}})", 16);
  const std::string path = tmp_dir() + "/ok.safetensors";
  write_bytes(path, ok);
  SafeTensorsFile f(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"e", "a", "g"}));
  EXPECT_EQ(f.tensor("g").numel(), 2);
}

TEST(SafeTensorsMalformed, Metadata) {
  auto with_md = [](const std::string& md) { return make_file("{\"__metadata__\":" + md + "}", 0); };
  expect_bad(with_md("[]"), {"__metadata__", "must be an object of strings"}, "md array");
  expect_bad(with_md("\"x\""), {"__metadata__", "must be an object of strings"}, "md string");
  expect_bad(with_md(R"({"k":1})"), {"__metadata__", "value of 'k' must be a string", "integer"}, "md int");
  expect_bad(with_md(R"({"k":{"n":"v"}})"), {"value of 'k'", "object"}, "md object");
  expect_bad(with_md(R"({"k":null})"), {"value of 'k'", "null"}, "md null");
  expect_bad(with_md(R"({"k":"a","k":"b"})"), {"duplicate key 'k'"}, "md dup");
}

TEST(SafeTensorsMalformed, NotARegularFile) {
  EXPECT_THROW({ SafeTensorsFile f(tmp_dir()); }, mamba::Error);
  EXPECT_THROW({ SafeTensorsFile f(tmp_dir() + "/does-not-exist"); }, mamba::Error);
}

TEST(SafeTensorsMalformed, RandomCorruptionNeverCrashes) {
  std::vector<std::pair<std::string, Tensor>> in = {
      {"a", patterned({3, 4}, DType::f32, 1)}, {"b", patterned({5}, DType::bf16, 2)},
      {"c", patterned({2, 2}, DType::i64, 3)}, {"d", patterned({7}, DType::u8, 4)}};
  const std::string src = tmp_dir() + "/fuzz_src.safetensors";
  mamba::io::save_safetensors(src, in, {{"k", "v"}});
  const std::string good = read_bytes(src);
  const std::string path = tmp_dir() + "/fuzz.safetensors";
  std::mt19937 rng(12345);
  int accepted = 0, rejected = 0;
  const char specials[] = {'"', '{', '}', '[', ']', ',', ':', '-', '0', '9', '.', 'e', ' ', '\0', '\xff'};
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    uint64_t header_end = 0;
    std::memcpy(&header_end, good.data(), 8);
    header_end += 8;
    for (int e = 0; e < edits; ++e) {
      // Half the edits land in the length field or the JSON header, where the parser works.
      const size_t pos = (rng() % 2 ? rng() % header_end : rng()) % b.size();
      switch (rng() % 5) {
        case 0: b[pos] = static_cast<char>(b[pos] ^ (1u << (rng() % 8))); break;
        case 1: b[pos] = specials[rng() % sizeof(specials)]; break;
        case 2: b.resize(pos); break;
        case 3: b[pos % 8] = static_cast<char>(rng()); break;  // header length field
        case 4: b.insert(pos, 1, static_cast<char>(rng())); break;
      }
      if (b.empty()) break;
    }
    write_bytes(path, b);
    try {
      SafeTensorsFile f(path);
      for (const auto& n : f.names()) {
        try {
          Tensor t = f.tensor(n);
          volatile unsigned char sink = 0;
          const auto* p = static_cast<const unsigned char*>(t.raw_data());
          for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ p[i];
        } catch (const mamba::Error&) {
        }
      }
      ++accepted;
    } catch (const mamba::Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(accepted, 0) << "corruption should sometimes leave a valid file (data bytes)";
  std::printf("fuzz: %d accepted, %d rejected\n", accepted, rejected);
  EXPECT_EQ(accepted + rejected, 3000);
}

// ---- writer errors -------------------------------------------------------------------

TEST(SafeTensorsWriter, RejectsBadInputAndLeavesNoTempFile) {
  const std::string dir = tmp_dir() + "/writer";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = dir + "/m.safetensors";
  auto expect_write_error = [&](const std::vector<std::pair<std::string, Tensor>>& ts, const std::string& needle) {
    try {
      mamba::io::save_safetensors(path, ts);
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const mamba::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  expect_write_error({{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}, "duplicate tensor name 'a'");
  expect_write_error({{"__metadata__", Tensor::zeros({1})}}, "reserved");
  expect_write_error({{"", Tensor::zeros({1})}}, "empty tensor name");
  expect_write_error({{"u", Tensor()}}, "'u' is undefined");
  expect_write_error({{"bad\xff", Tensor::zeros({1})}}, "not valid UTF-8");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir));

  try {
    mamba::io::save_safetensors(dir + "/no/such/dir/m.safetensors", {{"a", Tensor::zeros({1})}});
    ADD_FAILURE() << "expected an error";
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/m.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(SafeTensorsWriter, WriteFailureIsReportedAndTempRemoved) {
  // Simulates a full disk: with RLIMIT_FSIZE lowered, write() fails with EFBIG (SIGXFSZ
  // ignored), the same path through the writer as ENOSPC.
  const std::string dir = tmp_dir() + "/full";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = dir + "/big.safetensors";
  struct rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string msg;
  try {
    mamba::io::save_safetensors(path, {{"w", Tensor::zeros({4096})}});
  } catch (const mamba::Error& e) {
    msg = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("write failed"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(EFBIG)), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir)) << "temp file left behind";
}

TEST(AtomicFile, DestroyWithoutCommitRemovesTemp) {
  const std::string dir = tmp_dir() + "/atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = dir + "/x.bin";
  {
    mamba::io::AtomicFileWriter w(path);
    w.write("hello");
    EXPECT_TRUE(fs::exists(w.temp_path()));
    EXPECT_NE(w.temp_path().find(path + ".tmp."), std::string::npos);
  }
  EXPECT_TRUE(fs::is_empty(dir));
  mamba::io::write_file_atomic(path, "abc");
  EXPECT_EQ(read_bytes(path), "abc");
  mamba::io::write_file_atomic(path, "");
  EXPECT_EQ(read_bytes(path), "");
  mamba::io::write_file_atomic("rel_" + std::to_string(::getpid()) + ".tmpfile", "x");  // no directory part
  fs::remove("rel_" + std::to_string(::getpid()) + ".tmpfile");
}
