// Atomic file replacement: write to a temporary file in the target's directory, fsync it,
// rename() it over the target, fsync the directory. Readers see either the old file or
// the complete new one, never a partial write, even if the process dies mid-write.
//
// Temporary name: "<path>.tmp.<pid>.<random>" (same directory, so rename() stays on one
// filesystem). On any failure (and when an AtomicFileWriter is destroyed without
// commit()) the temporary file is removed and the target is left untouched.
// Errors: mamba::Error naming the path and the errno text ("No space left on device").
// The new file gets mode 0644 (minus umask), not the old file's mode; a symlink at `path`
// is replaced by the file, not followed.
// Thread-safety: one AtomicFileWriter per thread; different targets may be written
// concurrently. Two writers racing on the same target: the last rename wins, whole.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace mamba::io {

class AtomicFileWriter {
 public:
  // Creates the temporary file (mode 0644 before umask). Throws if it cannot.
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();  // removes the temporary file unless commit() succeeded
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends bytes (handles short writes and EINTR). On error the temporary file is removed.
  void write(const void* data, size_t bytes);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // fsync, close, rename over the target, fsync the directory. Call at most once.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  [[noreturn]] void abort_with(const std::string& what, int err);
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Replaces `path` with `bytes` atomically (see above).
void write_file_atomic(const std::string& path, std::string_view bytes);

// fsync of a directory (its entries), ignoring filesystems that cannot (EINVAL, EROFS).
void fsync_directory(const std::string& dir);

// Moves the complete directory `staging` to `target` (same filesystem). When `target`
// exists the two are exchanged atomically (renameat2 RENAME_EXCHANGE), so a reader sees
// the old or the new directory, whole; the old one is left at `staging` for the caller to
// remove. On filesystems without the exchange, the old one is renamed aside first (a
// crash in between leaves `target` missing, never partial).
void replace_directory(const std::string& staging, const std::string& target);

// A directory written whole or not at all — model directories: `write` fills a fresh
// staging directory beside `target` ("<target>.staging.<pid>.<random>"), which is then
// fsynced and exchanged with `target` (replace_directory); the old contents are removed.
// If `write` throws, the staging directory is removed and `target` is untouched.
void write_directory_atomic(const std::string& target, const std::function<void(const std::string& staging)>& write);

}  // namespace mamba::io
