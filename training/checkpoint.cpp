// minitrax/training/checkpoint.cpp
#include "training/checkpoint.hpp"

#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>

#include "core/npy.hpp"

namespace minitrax::training {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  core::NpzEntries entries;
  entries.emplace_back("step", Tensor::scalar(static_cast<double>(ckpt.step), DType::i64));
  for (const NamedTensor& w : ckpt.weights) entries.emplace_back("weights/" + w.name, w.value);
  for (const NamedTensor& s : ckpt.state) entries.emplace_back("state/" + s.name, s.value);
  for (const NamedTensor& s : ckpt.slots) entries.emplace_back("slots/" + s.name, s.value);
  for (const auto& [name, key] : ckpt.keys) {
    entries.emplace_back("keys/" + name,
                         Tensor::from<std::int64_t>({2}, {static_cast<std::int64_t>(key.hi),
                                                          static_cast<std::int64_t>(key.lo)}));
  }
  for (const NamedTensor& t : ckpt.loop) entries.emplace_back("loop/" + t.name, t.value);
  core::save_npz(path, entries);
}

Checkpoint load_checkpoint(const std::string& path) {
  const core::NpzEntries entries = core::load_npz(path);
  Checkpoint ckpt;
  bool has_step = false;
  for (const auto& [name, t] : entries) {
    if (name == "step") {
      if (t.size() != 1 || core::is_floating(t.dtype())) {
        throw CheckpointError(path + ": 'step' must be one integer, got " +
                              std::string(core::dtype_name(t.dtype())) + " " +
                              core::shape_str(t.shape()));
      }
      ckpt.step = t.item<long>();
      if (ckpt.step < 0) {
        throw CheckpointError(path + ": 'step' is " + std::to_string(ckpt.step) +
                              "; a checkpoint's step is a count of completed steps, >= 0");
      }
      has_step = true;
    } else if (starts_with(name, "weights/")) {
      ckpt.weights.push_back({name.substr(8), t});
    } else if (starts_with(name, "state/")) {
      ckpt.state.push_back({name.substr(6), t});
    } else if (starts_with(name, "slots/")) {
      ckpt.slots.push_back({name.substr(6), t});
    } else if (starts_with(name, "keys/")) {
      if (t.size() != 2 || t.dtype() != DType::i64) {
        throw CheckpointError(path + ": rng key '" + name + "' must be int64 [2], got " +
                              std::string(core::dtype_name(t.dtype())) + " " +
                              core::shape_str(t.shape()));
      }
      const auto v = t.to_vector<std::int64_t>();
      for (std::int64_t w : v) {
        if (w < 0 || w > 0xffffffffLL) {
          throw CheckpointError(path + ": rng key '" + name + "' holds " + std::to_string(w) +
                                ", not a 32-bit word");
        }
      }
      ckpt.keys.emplace_back(
          name.substr(5), Key{static_cast<std::uint32_t>(v[0]), static_cast<std::uint32_t>(v[1])});
    } else if (starts_with(name, "loop/")) {
      ckpt.loop.push_back({name.substr(5), t});
    } else {
      throw CheckpointError(
          path + ": unexpected member '" + name +
          "' (a minitrax checkpoint holds step, weights/, state/, slots/, keys/)");
    }
  }
  if (!has_step) {
    throw CheckpointError(path + ": not a minitrax checkpoint (no 'step' member)");
  }
  return ckpt;
}

void check_matches(const std::vector<NamedTensor>& expected, const std::vector<NamedTensor>& found,
                   const std::string& what, const std::string& source) {
  std::map<std::string, const Tensor*> have;
  for (const NamedTensor& f : found) have[f.name] = &f.value;
  std::vector<std::string> problems;
  std::map<std::string, bool> wanted;
  for (const NamedTensor& e : expected) {
    wanted[e.name] = true;
    auto it = have.find(e.name);
    if (it == have.end()) {
      problems.push_back("missing " + what + " '" + e.name + "' " +
                         core::shape_str(e.value.shape()));
    } else if (it->second->shape() != e.value.shape() || it->second->dtype() != e.value.dtype()) {
      problems.push_back(what + " '" + e.name + "': the model has " +
                         core::shape_str(e.value.shape()) + " " +
                         std::string(core::dtype_name(e.value.dtype())) + ", the checkpoint " +
                         core::shape_str(it->second->shape()) + " " +
                         std::string(core::dtype_name(it->second->dtype())));
    }
  }
  for (const NamedTensor& f : found) {
    if (!wanted.count(f.name)) {
      problems.push_back("extra " + what + " '" + f.name + "' " + core::shape_str(f.value.shape()) +
                         " (not in the model)");
    }
  }
  if (problems.empty()) return;
  std::string msg = source + ": the checkpoint does not match (" + std::to_string(problems.size()) +
                    " problem" + (problems.size() == 1 ? "" : "s") + "):";
  for (const std::string& p : problems) msg += "\n  " + p;
  throw CheckpointError(msg);
}

void restore_model(base::Layer& model, const Checkpoint& ckpt, const std::string& source) {
  const auto weights = model.flat_weights();
  const auto state = model.flat_state();
  check_matches(weights, ckpt.weights, "weight", source);
  check_matches(state, ckpt.state, "state", source);
  // Everything matches: install in the model's order.
  std::map<std::string, Tensor> w, s;
  for (const NamedTensor& t : ckpt.weights) w[t.name] = t.value;
  for (const NamedTensor& t : ckpt.state) s[t.name] = t.value;
  std::vector<Tensor> flat_w, flat_s;
  for (const NamedTensor& t : weights) flat_w.push_back(w.at(t.name));
  for (const NamedTensor& t : state) flat_s.push_back(s.at(t.name));
  model.set_flat_weights(flat_w);
  model.set_flat_state(flat_s);
}

std::string checkpoint_path(const std::string& dir, long step) {
  char name[32];
  std::snprintf(name, sizeof name, "ckpt_%09ld.npz", step);
  return (fs::path(dir) / name).string();
}

std::vector<std::pair<long, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<long, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 18 || !starts_with(name, "ckpt_") || name.substr(14) != ".npz") continue;
    const std::string digits = name.substr(5, 9);
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    out.emplace_back(std::stol(digits), entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  auto all = list_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

void prune_checkpoints(const std::string& dir, std::size_t keep) {
  auto all = list_checkpoints(dir);
  if (all.size() <= keep) return;
  // The newest checkpoint that loads stays, whatever `keep` says: a folder must never
  // be left without a readable checkpoint. Normally that is the newest file (one load).
  std::size_t readable = all.size();
  for (std::size_t i = all.size(); i-- > 0;) {
    try {
      (void)load_checkpoint(all[i].second);
      readable = i;
      break;
    } catch (const core::Error&) {
      // unreadable: look at the next older one
    }
  }
  if (readable == all.size()) return;  // none loads: delete nothing
  for (std::size_t i = 0; i + keep < all.size(); ++i) {
    if (i == readable) continue;
    std::error_code ec;
    fs::remove(all[i].second, ec);
  }
}

std::size_t remove_stale_temporaries(const std::string& dir) {
  std::size_t removed = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    // "<name>.minitrax-tmp.<pid>.<n>", as core::write_file_atomic names its
    // temporaries; nothing else is touched (a user's "notes.tmp.1.2" stays).
    static const std::string marker = ".minitrax-tmp.";
    const std::string name = entry.path().filename().string();
    const std::size_t last_dot = name.rfind('.');
    if (last_dot == std::string::npos || last_dot == 0) continue;
    const std::size_t pid_dot = name.rfind('.', last_dot - 1);
    if (pid_dot == std::string::npos || pid_dot + 1 <= marker.size()) continue;
    const std::size_t marker_at = pid_dot + 1 - marker.size();
    if (marker_at == 0 || name.compare(marker_at, marker.size(), marker) != 0) continue;
    const std::string pid_text = name.substr(pid_dot + 1, last_dot - pid_dot - 1);
    const std::string serial = name.substr(last_dot + 1);
    auto digits = [](const std::string& t) {
      return !t.empty() && t.size() <= 10 &&
             std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!digits(pid_text) || !digits(serial)) continue;
    const long pid = std::stol(pid_text);
    if (pid <= 0 || pid > std::numeric_limits<pid_t>::max()) continue;
    // Only a process that no longer exists: a live one may be writing it right now.
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    if (!entry.is_regular_file(ec)) continue;
    stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) {
    if (fs::remove(p, ec)) ++removed;
  }
  return removed;
}

// -- weights only ---------------------------------------------------------------------------

void restore_weights(base::Layer& model, const Checkpoint& ckpt, const std::string& source) {
  if (!model.initialized()) {
    throw core::ValueError("restore_weights: the model " + model.name() +
                           " is not initialised, so it has no weights to load " + source +
                           " into; call init(input_signature) first");
  }
  const auto weights = model.flat_weights();
  check_matches(weights, ckpt.weights, "weight", source);
  std::map<std::string, Tensor> w;
  for (const NamedTensor& t : ckpt.weights) w[t.name] = t.value;
  std::vector<Tensor> flat_w;
  flat_w.reserve(weights.size());
  for (const NamedTensor& t : weights) flat_w.push_back(w.at(t.name));
  model.set_flat_weights(flat_w);
}

std::optional<std::pair<std::string, Checkpoint>> newest_intact_checkpoint(const std::string& dir) {
  const auto all = list_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  std::string failures;
  for (std::size_t i = all.size(); i-- > 0;) {
    try {
      return std::make_pair(all[i].second, load_checkpoint(all[i].second));
    } catch (const core::Error& e) {
      failures += "\n  " + std::string(e.what());
    }
  }
  throw core::FileError(dir + ": none of its " + std::to_string(all.size()) +
                        " checkpoint(s) loads:" + failures);
}

std::string load_weights(base::Layer& model, const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    auto found = newest_intact_checkpoint(path);
    if (!found) {
      throw core::FileError(path +
                            ": no checkpoint in this folder (expected files named "
                            "ckpt_<9-digit step>.npz, as the Loop writes them)");
    }
    restore_weights(model, found->second, found->first);
    return found->first;
  }
  if (!fs::exists(path, ec)) {
    throw core::FileError(path + ": no such checkpoint file or run folder");
  }
  restore_weights(model, load_checkpoint(path), path);
  return path;
}

}  // namespace minitrax::training
