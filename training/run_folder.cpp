// minitrax/training/run_folder.cpp
#include "training/run_folder.hpp"

#include "training/checkpoint.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

namespace minitrax::training {

namespace fs = std::filesystem;

namespace {

// This process's locks by canonical folder path (weak: the folder is unlocked when the
// last holder lets go).
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::weak_ptr<RunLock>>& registry() {
  static std::map<std::string, std::weak_ptr<RunLock>> r;
  return r;
}

std::string read_holder(int fd) {
  char buf[256];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string s(buf, static_cast<std::size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  // Only printable text (the file is ours, but it sits in a user's folder).
  for (char& c : s) {
    if (c < 32 || c > 126) c = '?';
  }
  return s;
}

}  // namespace

std::string describe_run(const std::string& dir) {
  const auto ckpts = list_checkpoints(dir);
  if (!ckpts.empty()) {
    return std::to_string(ckpts.size()) + " checkpoint" + (ckpts.size() == 1 ? "" : "s") +
           " (newest: step " + std::to_string(ckpts.back().first) + ")";
  }
  std::error_code ec;
  const fs::path metrics = fs::path(dir) / "metrics.jsonl";
  const auto size = fs::file_size(metrics, ec);
  if (!ec && size > 0) return "metrics.jsonl (" + std::to_string(size) + " bytes, no checkpoint)";
  return "";
}

std::shared_ptr<RunLock> RunLock::acquire(const std::string& dir) {
  std::error_code ec;
  const fs::path canon = fs::canonical(dir, ec);
  if (ec || !fs::is_directory(canon, ec)) {
    throw FileError("cannot lock the run folder '" + dir +
                    "': " + (ec ? ec.message() : std::string("not a folder")));
  }
  const std::string key = canon.string();
  std::lock_guard<std::mutex> guard(registry_mutex());
  if (auto held = registry()[key].lock()) return held;

  const std::string path = (canon / kFileName).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    const int e = errno;
    throw FileError("cannot lock the run folder '" + dir + "': cannot open '" + path +
                    "': " + std::strerror(e));
  }
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int e = errno;
    const std::string holder = read_holder(fd);
    ::close(fd);
    if (e == EWOULDBLOCK) {
      throw RunLockedError("the run folder '" + dir + "' is in use by another process (" +
                           (holder.empty() ? std::string("its pid is not recorded yet") : holder) +
                           ", lock file " + path +
                           "); wait for it to finish, stop it, or use another output folder");
    }
    throw FileError("cannot lock the run folder '" + dir + "': " + std::strerror(e));
  }
  // Ours: record who holds it (for the message another process will print).
  char host[128] = "?";
  ::gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  const std::string who = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  if (::ftruncate(fd, 0) == 0) {
    const ssize_t put = ::pwrite(fd, who.data(), who.size(), 0);
    (void)put;  // the record is informative only; the lock is what matters
  }
  std::shared_ptr<RunLock> lock(new RunLock(dir, key, fd));
  registry()[key] = lock;
  return lock;
}

RunLock::~RunLock() {
  {
    std::lock_guard<std::mutex> guard(registry_mutex());
    auto it = registry().find(key_);
    if (it != registry().end() && it->second.expired()) registry().erase(it);
  }
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor drops the flock
}

}  // namespace minitrax::training
