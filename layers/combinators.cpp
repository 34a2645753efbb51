// minitrax/layers/combinators.cpp
#include "layers/combinators.hpp"

#include <algorithm>

#include "autodiff/fastmath.hpp"
#include "layers/stack_internal.hpp"

namespace minitrax::layers {

using base::Var;

using detail::checked;
using detail::replace_top;
using detail::serial_arity;
using detail::top;

// ---- Serial ------------------------------------------------------------------------

SerialLayer::SerialLayer(std::vector<LayerPtr> layers, std::string name, SrcLoc where)
    : base::Layer(serial_arity(layers).first, serial_arity(layers).second, std::move(name), where) {
  set_sublayers(checked(std::move(layers), "Serial"));
}

Stack SerialLayer::forward(const Stack& inputs) {
  const auto& layers = sublayers();
  if (layers.empty()) return inputs;
  const auto rngs = core::split(rng_, layers.size());
  Stack stack = inputs;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const LayerPtr& l = layers[i];
    stack = replace_top(stack, l->n_in(), l->apply(top(stack, l->n_in()), rngs[i]));
  }
  return stack;
}

void SerialLayer::init_weights_and_state(const Signature& input_signature) {
  Signature stack = input_signature;
  for (const LayerPtr& l : sublayers()) {
    const Signature in = top(stack, l->n_in());
    l->init(in, l->rng(), /*use_cache=*/true);
    stack = replace_top(stack, l->n_in(), l->output_signature(in));
  }
}

Signature SerialLayer::forward_signature(const Signature& input_signature) {
  Signature stack = input_signature;
  for (const LayerPtr& l : sublayers()) {
    stack = replace_top(stack, l->n_in(), l->output_signature(top(stack, l->n_in())));
  }
  return stack;
}

// ---- Parallel -------------------------------------------------------------------------

namespace {
int sum_n_in(const std::vector<LayerPtr>& ls) {
  int n = 0;
  for (const LayerPtr& l : ls) n += l->n_in();
  return n;
}
int sum_n_out(const std::vector<LayerPtr>& ls) {
  int n = 0;
  for (const LayerPtr& l : ls) n += l->n_out();
  return n;
}
}  // namespace

ParallelLayer::ParallelLayer(std::vector<LayerPtr> layers, std::string name, SrcLoc where)
    : base::Layer(sum_n_in(checked(layers, "Parallel")), sum_n_out(layers), std::move(name),
                  where) {
  set_sublayers(std::move(layers));
}

Stack ParallelLayer::forward(const Stack& inputs) {
  const auto& layers = sublayers();
  const auto rngs = core::split(rng_, std::max<std::size_t>(layers.size(), 1));
  Stack out;
  std::size_t pos = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto n = static_cast<std::size_t>(layers[i]->n_in());
    Stack in(inputs.begin() + static_cast<long>(pos), inputs.begin() + static_cast<long>(pos + n));
    pos += n;
    Stack ys = layers[i]->apply(in, rngs[i]);
    out.insert(out.end(), ys.begin(), ys.end());
  }
  return out;
}

void ParallelLayer::init_weights_and_state(const Signature& input_signature) {
  std::size_t pos = 0;
  for (const LayerPtr& l : sublayers()) {
    const auto n = static_cast<std::size_t>(l->n_in());
    Signature in(input_signature.begin() + static_cast<long>(pos),
                 input_signature.begin() + static_cast<long>(pos + n));
    pos += n;
    l->init(in, l->rng(), /*use_cache=*/true);
  }
}

Signature ParallelLayer::forward_signature(const Signature& input_signature) {
  Signature out;
  std::size_t pos = 0;
  for (const LayerPtr& l : sublayers()) {
    const auto n = static_cast<std::size_t>(l->n_in());
    Signature in(input_signature.begin() + static_cast<long>(pos),
                 input_signature.begin() + static_cast<long>(pos + n));
    pos += n;
    Signature ys = l->output_signature(in);
    out.insert(out.end(), ys.begin(), ys.end());
  }
  return out;
}

// ---- Fn ----------------------------------------------------------------------------------

FnLayer::FnLayer(std::string name, Function f, int n_in, int n_out, SrcLoc where)
    : base::Layer(n_in, n_out, std::move(name), where), f_(std::move(f)) {
  if (!f_) throw core::ValueError("Fn " + this->name() + ": the function is empty");
}

Stack FnLayer::forward(const Stack& inputs) {
  return f_(inputs);
}

// ---- factories ----------------------------------------------------------------------------

LayerPtr Serial(std::vector<LayerPtr> layers, SrcLoc where) {
  return std::make_shared<SerialLayer>(std::move(layers), "Serial", where);
}

LayerPtr Serial(std::vector<LayerPtr> layers, std::string name, SrcLoc where) {
  return std::make_shared<SerialLayer>(std::move(layers), std::move(name), where);
}

LayerPtr Parallel(std::vector<LayerPtr> layers, SrcLoc where) {
  for (LayerPtr& l : layers) {
    if (!l) l = Serial({}, where);  // Trax: None is a one-input no-op
  }
  return std::make_shared<ParallelLayer>(std::move(layers), "Parallel", where);
}

LayerPtr Select(std::vector<int> indices, int n_in, SrcLoc where) {
  int max_index = -1;
  for (int i : indices) {
    if (i < 0) throw core::ValueError("Select: indices must be >= 0, got " + std::to_string(i));
    max_index = std::max(max_index, i);
  }
  if (n_in < 0) n_in = max_index + 1;
  if (max_index >= n_in) {
    throw core::ValueError("Select: index " + std::to_string(max_index) +
                           " is out of range for n_in = " + std::to_string(n_in));
  }
  std::string name = "Select[";
  for (std::size_t k = 0; k < indices.size(); ++k) {
    name += (k ? "," : "") + std::to_string(indices[k]);
  }
  name += "]";
  return std::make_shared<FnLayer>(
      name,
      [indices](const Stack& xs) {
        Stack out;
        for (int i : indices) out.push_back(xs[static_cast<std::size_t>(i)]);
        return out;
      },
      n_in, static_cast<int>(indices.size()), where);
}

LayerPtr Branch(std::vector<LayerPtr> layers, SrcLoc where) {
  if (layers.size() == 1 && layers[0]) return layers[0];
  for (LayerPtr& l : layers) {
    if (!l) l = Serial({}, where);
  }
  std::vector<int> indices;
  for (const LayerPtr& l : layers) {
    for (int i = 0; i < l->n_in(); ++i) indices.push_back(i);
  }
  int n_in = 0;
  for (const LayerPtr& l : layers) n_in = std::max(n_in, l->n_in());
  return Serial({Select(indices, n_in, where), Parallel(std::move(layers), where)}, "Branch",
                where);
}

LayerPtr Residual(std::vector<LayerPtr> layers, LayerPtr shortcut, SrcLoc where) {
  LayerPtr body = layers.size() == 1 ? layers[0] : Serial(std::move(layers), where);
  return Serial({Branch({std::move(shortcut), body}, where), Add(where)}, "Residual", where);
}

LayerPtr Dup(SrcLoc where) {
  return std::make_shared<FnLayer>(
      "Dup",
      [](const Stack& xs) {
        return Stack{xs[0], xs[0]};
      },
      1, 2, where);
}

LayerPtr Drop(SrcLoc where) {
  return std::make_shared<FnLayer>(
      "Drop", [](const Stack&) { return Stack{}; }, 1, 0, where);
}

LayerPtr Swap(SrcLoc where) {
  return std::make_shared<FnLayer>(
      "Swap",
      [](const Stack& xs) {
        return Stack{xs[1], xs[0]};
      },
      2, 2, where);
}

namespace {
// A two-input, one-output layer from an element-wise op on Vars.
LayerPtr binary_layer(const char* name, Var (*op)(const Var&, const Var&), bool top_last,
                      SrcLoc where) {
  return std::make_shared<FnLayer>(
      name,
      [op, top_last](const Stack& xs) {
        return Stack{top_last ? op(xs[1], xs[0]) : op(xs[0], xs[1])};
      },
      2, 1, where);
}
}  // namespace

LayerPtr Add(SrcLoc where) {
  return binary_layer("Add", fastmath::add, false, where);
}

LayerPtr Multiply(SrcLoc where) {
  return binary_layer("Multiply", fastmath::multiply, false, where);
}

/// x1 - x0: the top item is subtracted from the second.
LayerPtr SubtractTop(SrcLoc where) {
  return binary_layer("SubtractTop", fastmath::subtract, true, where);
}

LayerPtr Concatenate(int n_items, long axis, SrcLoc where) {
  if (n_items < 1) {
    throw core::ValueError("Concatenate: n_items must be >= 1, got " + std::to_string(n_items));
  }
  const std::string name = axis == -1 ? "Concatenate" : "Concatenate_axis" + std::to_string(axis);
  return std::make_shared<FnLayer>(
      name, [axis](const Stack& xs) { return Stack{fastmath::concatenate(xs, axis)}; }, n_items, 1,
      where);
}

LayerPtr Split(int n_items, long axis, SrcLoc where) {
  if (n_items < 1) {
    throw core::ValueError("Split: n_items must be >= 1, got " + std::to_string(n_items));
  }
  return std::make_shared<FnLayer>(
      "Split",
      [n_items, axis](const Stack& xs) {
        return fastmath::split(xs[0], static_cast<std::size_t>(n_items), axis);
      },
      1, n_items, where);
}

LayerPtr Fn(std::string name, FnLayer::Function f, int n_in, int n_out, SrcLoc where) {
  return std::make_shared<FnLayer>(std::move(name), std::move(f), n_in, n_out, where);
}

LayerPtr Fn(std::string name, std::function<Var(const Var&)> f, SrcLoc where) {
  if (!f) throw core::ValueError("Fn " + name + ": the function is empty");
  return std::make_shared<FnLayer>(
      std::move(name), [f = std::move(f)](const Stack& xs) { return Stack{f(xs[0])}; }, 1, 1,
      where);
}

}  // namespace minitrax::layers
