// examples/common/run_start.hpp: how an example program takes its run folder, the same
// way for the main job and the text trainer:
//   1. make output_dir and lock it (one writer; the Loop shares the lock);
//   2. a folder that already holds a run needs --resume (else: refused, nothing changed);
//   3. with --resume, the saved config.json is the run's truth (ConfigTable's
//      resolve_resume); a run folder without one is refused; an empty folder starts anew.
// Nothing in the folder is written here: the program writes config.json once every
// check, including the Loop's checkpoint checks, has passed (write_config_if_changed).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

#include "common/settings.hpp"
#include "core/npy.hpp"
#include "training/run_folder.hpp"

namespace minitrax::app {

/// The program must end with `status` after printing what() (a refusal, not a crash).
class RunRefused : public std::runtime_error {
 public:
  RunRefused(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

/// A run folder taken by the program (see the file comment).
template <typename C>
struct StartedRun {
  C config;                                 ///< resolved: validated, warm-up a number
  std::shared_ptr<training::RunLock> lock;  ///< held while the program runs
  std::optional<std::string> saved_config;  ///< the folder's config.json text, if any
};

/// `<dir>/config.json`'s text, or nothing if the folder has none.
inline std::optional<std::string> saved_config_text(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && !std::filesystem::is_symlink(path, ec)) {
    return std::nullopt;
  }
  return read_config_file(path.string());
}

/// Steps 1-3 of the file comment. RunRefused (status 1: the folder cannot be made;
/// status 2: a run is there without --resume, or a run without config.json);
/// training::RunLockedError if another process holds the folder; ConfigError from the
/// config's resolution.
template <typename C>
StartedRun<C> start_run(const ConfigTable<C>& table, const CommandLineOf<C>& cl) {
  namespace fs = std::filesystem;
  StartedRun<C> run{cl.config, nullptr, std::nullopt};
  const std::string dir = cl.config.output_dir;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw RunRefused(1, "cannot create output_dir '" + dir +
                            "': " + (ec ? ec.message() : std::string("not a folder")));
  }
  // Held until the process ends (the kernel drops it even on kill -9).
  run.lock = training::RunLock::acquire(dir);
  // A folder with checkpoints, or with the metrics of a run killed before its first
  // checkpoint, belongs to a run: continue it (--resume) or go elsewhere.
  const std::string held = training::describe_run(dir);
  if (!cl.resume && !held.empty()) {
    throw RunRefused(2, "'" + dir + "' already holds a run (" + held +
                            "); pass --resume to continue it, or --output-dir to start a new "
                            "run elsewhere (nothing was changed)");
  }
  if (!cl.resume) {
    run.config = table.resolve_new_run(cl);
    return run;
  }
  run.saved_config = saved_config_text(dir);
  if (run.saved_config) {
    // The saved config is the run's truth: flags may change only what leaves the
    // computation done so far as it is; anything else is refused before a file is touched.
    run.config =
        table.resolve_resume(*run.saved_config, (fs::path(dir) / "config.json").string(), cl);
  } else if (!held.empty()) {
    throw RunRefused(2, "'" + dir + "' holds a run (" + held +
                            ") but no config.json, so its settings are unknown; nothing was "
                            "changed");
  } else {
    run.config = table.resolve_new_run(cl);  // nothing to continue: a new run
  }
  return run;
}

/// Writes `<dir>/config.json` (atomically) unless it already holds exactly `text`.
inline void write_config_if_changed(const std::string& dir, const std::optional<std::string>& saved,
                                    const std::string& text) {
  if (!saved || *saved != text) {
    core::write_file_atomic((std::filesystem::path(dir) / "config.json").string(), text);
  }
}

}  // namespace minitrax::app
