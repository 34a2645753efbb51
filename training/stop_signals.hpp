/// @file
/// A graceful stop on SIGTERM and SIGINT.
///
/// A cluster that preempts a job sends SIGTERM and, some seconds later, SIGKILL; a
/// person stops a run with Ctrl-C (SIGINT). While a StopSignals guard lives, either
/// signal only asks for a stop: the Loop finishes the step it is in, writes a
/// checkpoint and its metrics, and throws training::Stopped; the program then says how
/// to resume and exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM),
/// as a shell reports a process stopped by that signal. A second signal while a stop is
/// pending ends the process at once (the signal's default action).
///
/// @code
/// training::StopSignals graceful;     // handlers installed until the guard goes
/// try {
///   loop.run(10000);
/// } catch (const training::Stopped& s) {
///   std::cerr << s.what() << "\n";
///   return s.exit_status();
/// }
/// @endcode
///
/// Guards nest (the Loop makes one for each run() and a program may hold one for its
/// whole life); the previous handlers come back when the outermost guard goes.
#pragma once

#include <string>

#include "core/error.hpp"

namespace minitrax::training {

/// Installs the graceful-stop handlers for SIGTERM and SIGINT while it lives.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  /// The signal that asked for a stop (SIGTERM or SIGINT), or 0.
  static int requested();
  /// Forgets a pending request (for a program that handled it and goes on).
  static void clear();
  /// Asks for a stop as if `signal` had arrived (for tests and for programs that stop
  /// for reasons of their own).
  static void request(int signal);
};

/// A run stopped on request (SIGTERM, SIGINT) after a clean checkpoint.
class Stopped : public core::Error {
 public:
  /// A stop by `signal` after `step` steps, with the checkpoint written then.
  Stopped(int signal, long step, std::string checkpoint, const std::string& message)
      : core::Error(message), signal_(signal), step_(step), checkpoint_(std::move(checkpoint)) {}
  /// The signal that asked for the stop.
  int signal() const { return signal_; }
  /// Completed training steps at the stop.
  long step() const { return step_; }
  /// The checkpoint written at the stop ("" if the Loop has no output folder).
  const std::string& checkpoint() const { return checkpoint_; }
  /// 128 + the signal's number: the status a shell gives a process ended by it.
  int exit_status() const { return 128 + signal_; }

 private:
  int signal_;
  long step_;
  std::string checkpoint_;
};

/// "SIGTERM", "SIGINT", or "signal N".
std::string signal_name(int signal);

}  // namespace minitrax::training
