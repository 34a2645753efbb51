/// @file
/// One writer per run folder.
///
/// A run folder (checkpoints, metrics.jsonl, config.json, ...) must never be written by
/// two processes at once: their lines would interleave and their checkpoints overwrite
/// each other. RunLock takes an exclusive lock on `<dir>/.minitrax.lock` (flock(2)) for
/// as long as it lives. The kernel drops the lock when the process ends, however it
/// ends (`kill -9` included), so a stale lock is never left behind: the file may stay,
/// the lock does not.
///
/// @code
/// auto lock = training::RunLock::acquire("runs/x");   // RunLockedError if another process has it
/// // ... write into runs/x ...
/// @endcode
///
/// Within one process, acquiring a folder that this process already holds returns the
/// same lock (the main job takes it before it reads the folder, and the Loop it then
/// makes takes it again). The lock file records the holder's pid and host, so the
/// error can name them.
#pragma once

#include <memory>
#include <string>

#include "core/error.hpp"

namespace minitrax::training {

/// The run folder is locked by another process.
class RunLockedError : public core::Error {
 public:
  using core::Error::Error;
};

/// The folder already holds a run that the caller did not ask to continue.
class RunExistsError : public core::Error {
 public:
  using core::Error::Error;
};

/// What of a run a folder holds: "" if none, else e.g. "checkpoints up to step 40" or
/// "metrics.jsonl (12 lines)". A run is checkpoints (ckpt_*.npz) or a non-empty
/// metrics.jsonl (a run killed before its first checkpoint).
std::string describe_run(const std::string& dir);

/// An exclusive, process-lifetime lock on a run folder (see run_lock.hpp).
class RunLock {
 public:
  /// Locks `dir` (which must exist) or throws RunLockedError naming the folder and the
  /// pid that holds it; FileError if the lock file cannot be made.
  static std::shared_ptr<RunLock> acquire(const std::string& dir);
  /// The lock file's name inside a run folder.
  static constexpr const char* kFileName = ".minitrax.lock";

  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  /// The folder as given to acquire().
  const std::string& dir() const { return dir_; }

 private:
  RunLock(std::string dir, std::string key, int fd)
      : dir_(std::move(dir)), key_(std::move(key)), fd_(fd) {}
  std::string dir_;
  std::string key_;  // the folder's canonical path (the per-process registry's key)
  int fd_ = -1;
};

}  // namespace minitrax::training
