#include "mamba/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "mamba/tensor/tensor.h"

namespace mamba::io {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

uint64_t random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^
                                          (static_cast<uint64_t>(::getpid()) << 32)};
  return rng();
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  if (path_.empty()) fail("write_file_atomic", "empty path");
  for (int attempt = 0; attempt < 16; ++attempt) {
    temp_path_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(random_suffix());
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ >= 0) return;
    if (errno != EEXIST) break;
  }
  const int err = errno;
  temp_path_.clear();
  fail("write_file_atomic", "cannot create a temporary file next to '" + path_ + "': " + errno_text(err));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

void AtomicFileWriter::abort_with(const std::string& what, int err) {
  discard();
  fail("write_file_atomic", what + " '" + path_ + "': " + errno_text(err));
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  if (committed_ || fd_ < 0) fail("write_file_atomic", "write after commit or failure on '" + path_ + "'");
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most ~2 GiB per call; keep chunks well under that.
    const size_t chunk = bytes < (size_t{1} << 30) ? bytes : (size_t{1} << 30);
    const ssize_t n = ::write(fd_, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      abort_with("write failed for", errno);
    }
    if (n == 0) abort_with("write made no progress for", EIO);
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  if (committed_ || fd_ < 0) fail("write_file_atomic", "commit called twice or after a failure on '" + path_ + "'");
  if (::fsync(fd_) != 0) abort_with("fsync failed for", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) abort_with("close failed for", errno);
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) abort_with("cannot rename the temporary file onto", errno);
  committed_ = true;
  temp_path_.clear();
  // Make the rename itself durable. Some filesystems refuse fsync on a directory
  // (EINVAL); the data is already in place then, so that is not an error.
  const std::string dir = directory_of(path_);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail("write_file_atomic", "cannot open directory '" + dir + "' to fsync it: " + errno_text(errno));
  if (::fsync(dfd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(dfd);
    fail("write_file_atomic", "fsync of directory '" + dir + "' failed: " + errno_text(err));
  }
  ::close(dfd);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.write(bytes);
  w.commit();
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("atomic_file", "'" + dir + "': cannot open directory to fsync it: " + errno_text(errno));
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL && err != EROFS) fail("atomic_file", "'" + dir + "': fsync failed: " + errno_text(err));
}

void replace_directory(const std::string& staging, const std::string& target) {
  namespace fs = std::filesystem;
  auto bad = [&](const std::string& what) { fail("atomic_file", "'" + target + "': " + what); };
  std::error_code ec;
  if (!fs::exists(target, ec)) {
    if (std::rename(staging.c_str(), target.c_str()) != 0) bad("cannot rename '" + staging + "' to it: " + errno_text(errno));
    return;
  }
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) return;
  const int err = errno;
  if (err != EINVAL && err != ENOSYS && err != ENOTSUP) bad("cannot exchange it with '" + staging + "': " + errno_text(err));
  const std::string aside = staging + ".old";
  fs::remove_all(aside, ec);
  if (std::rename(target.c_str(), aside.c_str()) != 0) bad("cannot move it aside: " + errno_text(errno));
  if (std::rename(staging.c_str(), target.c_str()) != 0) bad("cannot rename '" + staging + "' to it: " + errno_text(errno));
  fs::rename(aside, staging, ec);
}

void write_directory_atomic(const std::string& target, const std::function<void(const std::string& staging)>& write) {
  namespace fs = std::filesystem;
  std::string t = target;
  while (t.size() > 1 && t.back() == '/') t.pop_back();
  const std::string staging = t + ".staging." + std::to_string(::getpid()) + "." + std::to_string(random_suffix() % 1000000);
  std::error_code ec;
  fs::remove_all(staging, ec);
  try {
    fs::create_directories(staging);
    write(staging);
    fsync_directory(staging);
    replace_directory(staging, t);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(staging, ec);
    fail("atomic_file", "cannot write '" + t + "': " + e.what());
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  fs::remove_all(staging, ec);  // the old contents, after an exchange
  fsync_directory(directory_of(t));
}

}  // namespace mamba::io
