/// @file
/// Checkpoints as one .npz file.
///
/// A checkpoint holds everything a run needs to continue bit for bit: the step,
/// the model's weights and state, the optimizer's slots, and rng keys, each as a
/// named member of an .npz archive (readable with numpy: np.load(path)):
///
/// @code{.unparsed}
///   step                              int64 scalar
///   weights/Serial/Dense_1/w          the flat, named weights of the model
///   state/Serial/.../state_0          the model's state
///   slots/Serial/Dense_1/w/m          optimizer slots
///   keys/<name>                       rng keys as uint32 pairs stored in int64 [2]
///   loop/train_stream                 the Loop's training data::BatchStream position, int64 [n]
///   loop/seconds                      float64: wall time trained (runs with a time budget)
/// @endcode
///
/// Files are written atomically (temporary file, fsync, rename): a crash during a
/// save leaves the previous checkpoint intact. Loading into a model first checks
/// every name and shape and reports all missing, extra and mis-shaped entries at
/// once, before anything is changed.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "layers/base.hpp"

namespace minitrax::training {

using base::NamedTensor;
using core::Key;

/// A checkpoint that does not fit the model or optimizer it is loaded into.
class CheckpointError : public core::Error {
 public:
  using core::Error::Error;
};

/// The contents of one checkpoint file (see the file documentation of checkpoint.hpp).
/// @code
/// Checkpoint ckpt{.step = 100, .weights = model->flat_weights(), .state = model->flat_state(),
///                 .slots = optimizer.slots(), .keys = {{"loop", rng}}};
/// save_checkpoint(checkpoint_path("run1", 100), ckpt);
/// restore_model(*model, load_checkpoint(checkpoint_path("run1", 100)), "run1");
/// @endcode
struct Checkpoint {
  long step = 0;                                  ///< completed training steps
  std::vector<NamedTensor> weights;               ///< Layer::flat_weights()
  std::vector<NamedTensor> state;                 ///< Layer::flat_state()
  std::vector<NamedTensor> slots;                 ///< Optimizer::slots()
  std::vector<std::pair<std::string, Key>> keys;  ///< named rng keys
  /// The Loop's own progress besides the step, stored as `loop/<name>`: "train_stream"
  /// (the training BatchStream's position(), int64 [n]) and "seconds" (float64 scalar:
  /// wall time trained, for the time budget). Empty for a step-indexed stream without a
  /// budget.
  std::vector<NamedTensor> loop;
};

/// Writes the checkpoint atomically (temporary file, fsync, rename); FileError if
/// the folder is missing or the write fails (the previous file stays intact).
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
/// Reads a checkpoint; FileError if the file is unreadable, truncated or corrupt,
/// CheckpointError if it is a valid .npz but not a minitrax checkpoint.
Checkpoint load_checkpoint(const std::string& path);

/// Checks that `found` has exactly the names of `expected`, with the same shapes
/// and dtypes; otherwise throws CheckpointError listing every missing, extra and
/// mis-shaped entry ("what" names the group, e.g. "weights", and `source` the file).
void check_matches(const std::vector<NamedTensor>& expected, const std::vector<NamedTensor>& found,
                   const std::string& what, const std::string& source);

/// Loads weights and state into a model after checking them (nothing changes on error).
void restore_model(base::Layer& model, const Checkpoint& ckpt, const std::string& source);

// -- a folder of checkpoints -----------------------------------------------------------
/// `"<dir>/ckpt_<step, 9 digits>.npz"`, e.g. checkpoint_path("run1", 100) is
/// "run1/ckpt_000000100.npz".
std::string checkpoint_path(const std::string& dir, long step);
/// Checkpoints in a folder, oldest first, as (step, path). Only complete files named
/// `ckpt_<9 digits>.npz` count: an atomic write's temporary (`ckpt_....npz.minitrax-tmp.<pid>.<n>`,
/// left behind by a killed process) is never listed.
std::vector<std::pair<long, std::string>> list_checkpoints(const std::string& dir);
/// The newest checkpoint in the folder, if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);
/// Deletes all but the newest `keep` checkpoints, but never the newest readable one:
/// if the newest `keep` files cannot be loaded (load_checkpoint fails), the newest
/// checkpoint that can stays too (and if none can, nothing is deleted).
void prune_checkpoints(const std::string& dir, std::size_t keep);
/// Deletes what killed processes left in `dir`: temporaries of atomic writes
/// (`"<name>.minitrax-tmp.<pid>.<n>"`) whose process no longer runs. Returns how many it deleted.
std::size_t remove_stale_temporaries(const std::string& dir);

// -- weights only, into a model in any mode ------------------------------------------------
/// Loads only the weights of `ckpt` into `model`, matched by their flat names
/// (Layer::flat_weights()), whatever the model's mode: a model built in predict mode
/// (whose state holds caches and positions, not what training saved) takes the
/// weights a train-mode run saved. The model's state is left as it is. The check is
/// check_matches's: every missing, extra and mis-shaped weight is reported at once
/// (CheckpointError naming `source`) and nothing changes on error. ValueError if the
/// model is not initialised (its weights do not exist yet).
///
/// The flat names do not depend on the mode: TransformerLM and ReformerLM build the
/// same layer list in every mode (Dropout stays, as the identity, outside train
/// mode), so "Serial/PositionalEncoding_3/pe" names the same weight in all three
/// (tests/test_restore_weights.cpp checks this for both models).
/// @code
/// auto lm = models::TransformerLM({... .mode = base::Mode::predict});
/// lm->init({1, 1}, DType::i32);
/// training::restore_weights(*lm, training::load_checkpoint(path), path);
/// @endcode
void restore_weights(base::Layer& model, const Checkpoint& ckpt, const std::string& source);

/// The newest checkpoint of a run folder that loads, oldest ones tried only if newer
/// ones are damaged; std::nullopt if the folder has no checkpoint file at all.
/// FileError if there are checkpoints but none loads (each one's error is listed).
std::optional<std::pair<std::string, Checkpoint>> newest_intact_checkpoint(const std::string& dir);

/// restore_weights from a path: a checkpoint file (e.g. "runs/x/ckpt_000000400.npz",
/// or any other .npz checkpoint such as a kept best one), or a run folder, whose newest
/// intact checkpoint is used (newest_intact_checkpoint). Returns the file it loaded.
/// FileError if the path does not exist, the folder holds no checkpoint, or none loads.
/// @code
/// training::load_weights(*predict_model, "runs/copy");   // "runs/copy/ckpt_000000400.npz"
/// @endcode
std::string load_weights(base::Layer& model, const std::string& path);

}  // namespace minitrax::training
