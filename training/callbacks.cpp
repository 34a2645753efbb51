// minitrax/training/callbacks.cpp
#include "training/callbacks.hpp"

#include <string>
#include <utility>

#include "core/error.hpp"

namespace minitrax::training {

namespace {

class Every : public Callback {
 public:
  Every(long n, std::function<void(Loop&, long)> fn) : n_(n), fn_(std::move(fn)) {}
  bool call_at(long step) const override { return step % n_ == 0; }
  void on_step_end(Loop& loop, long step) override { fn_(loop, step); }

 private:
  long n_;
  std::function<void(Loop&, long)> fn_;
};

}  // namespace

std::shared_ptr<Callback> every(long n, std::function<void(Loop& loop, long step)> fn) {
  if (n < 1)
    throw ValueError("training::every: n must be >= 1 (call every n steps), got " +
                     std::to_string(n));
  if (!fn) throw ValueError("training::every: the function is empty");
  return std::make_shared<Every>(n, std::move(fn));
}

}  // namespace minitrax::training
