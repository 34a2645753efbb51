// minitrax/training/stop_signals.cpp
#include "training/stop_signals.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace minitrax::training {

namespace {

std::atomic<int> g_requested{0};
std::mutex g_mutex;  // guards the nesting count and the saved handlers
int g_depth = 0;
struct sigaction g_old_term {};
struct sigaction g_old_int {};

void write_stderr(const char* text) {
  std::size_t left = std::strlen(text);
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, text, left);
    if (n <= 0) return;
    text += n;
    left -= static_cast<std::size_t>(n);
  }
}

// Async-signal-safe: an atomic store, write(2), and for a second signal the default
// action via sigaction + raise.
extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  if (g_requested.compare_exchange_strong(expected, sig)) {
    write_stderr(sig == SIGINT ? "\nminitrax: SIGINT: finishing this step, then a checkpoint "
                                 "(Ctrl-C again stops at once)\n"
                               : "\nminitrax: SIGTERM: finishing this step, then a checkpoint\n");
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

}  // namespace

StopSignals::StopSignals() {
  std::lock_guard<std::mutex> guard(g_mutex);
  if (g_depth++ > 0) return;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, &g_old_term);
  ::sigaction(SIGINT, &sa, &g_old_int);
}

StopSignals::~StopSignals() {
  std::lock_guard<std::mutex> guard(g_mutex);
  if (--g_depth > 0) return;
  ::sigaction(SIGTERM, &g_old_term, nullptr);
  ::sigaction(SIGINT, &g_old_int, nullptr);
}

int StopSignals::requested() {
  return g_requested.load();
}

void StopSignals::clear() {
  g_requested.store(0);
}

void StopSignals::request(int signal) {
  int expected = 0;
  g_requested.compare_exchange_strong(expected, signal);
}

std::string signal_name(int signal) {
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGINT) return "SIGINT";
  return "signal " + std::to_string(signal);
}

}  // namespace minitrax::training
