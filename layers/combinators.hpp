/// @file
/// Layers made of layers, with Trax's stack semantics.
///
/// @code{.unparsed}
///   Serial({F, G, H})      applies F, then G, then H to the stack
///   Parallel({F, G})       F on the first F.n_in items, G on the next G.n_in
///   Branch({F, G})         F and G each on copies of the top of the stack
///   Residual({F, G})       x + G(F(x))
///   Select({0, 0, 1})      copies/reorders stack items
///   Dup, Drop, Swap, Add, Multiply, SubtractTop, Concatenate, Split
///   Fn("Name", f, n_in, n_out)   any C++ callable made a layer
/// @endcode
///
/// Each factory takes the creation site as its last (defaulted) argument, so
/// errors point at the line of the model definition.
#pragma once

#include <functional>
#include <source_location>
#include <string>
#include <vector>

#include "layers/base.hpp"

namespace minitrax::layers {

using base::LayerPtr;
using base::Signature;
using base::Stack;
/// The creation site a factory records (its defaulted last argument).
using SrcLoc = std::source_location;

/// Sublayers applied one after another on the stack. n_in/n_out come from one
/// fold over the sublayers; no sublayers is a one-input no-op. Made by Serial().
class SerialLayer : public base::Layer {
 public:
  /// The layers in order, under the label `name`; a nullptr entry is a ValueError.
  SerialLayer(std::vector<LayerPtr> layers, std::string name, SrcLoc where);

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
};

/// Sublayers applied side by side to consecutive spans of the stack: the first
/// takes the first n_in items, the next the following ones; outputs in order.
/// Made by Parallel().
class ParallelLayer : public base::Layer {
 public:
  /// The layers side by side, labelled `name`; a nullptr entry is a ValueError
  /// (the Parallel() factory turns nullptr into a one-input no-op first).
  ParallelLayer(std::vector<LayerPtr> layers, std::string name, SrcLoc where);

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;
  /// @copydoc minitrax::base::Layer::init_weights_and_state
  void init_weights_and_state(const Signature& input_signature) override;
  /// @copydoc minitrax::base::Layer::forward_signature
  Signature forward_signature(const Signature& input_signature) override;
};

/// A layer from a function on the stack (Trax's Fn / PureLayer).
/// Made by Fn().
class FnLayer : public base::Layer {
 public:
  /// The computation: n_in Vars in (top of stack first), n_out Vars out.
  using Function = std::function<Stack(const Stack&)>;
  /// A layer named `name` computing `f` on n_in items, giving n_out.
  FnLayer(std::string name, Function f, int n_in, int n_out, SrcLoc where);

 protected:
  /// @copydoc minitrax::base::Layer::forward
  Stack forward(const Stack& inputs) override;

 private:
  Function f_;
};

/// The layers applied one after another to the stack (Trax's Serial).
/// @code
/// auto mlp = Serial({Dense(64), Relu(), Dense(10), LogSoftmax()});
/// mlp->init({8, 32});
/// Var logp = (*mlp)(x);                          // x [8, 32] -> [8, 10]
/// @endcode
LayerPtr Serial(std::vector<LayerPtr> layers, SrcLoc where = SrcLoc::current());
/// Serial with its own label in repr() and in weight paths, e.g. "Encoder".
LayerPtr Serial(std::vector<LayerPtr> layers, std::string name, SrcLoc where = SrcLoc::current());
/// The layers side by side on consecutive stack items (Trax's Parallel). A nullptr
/// entry is a one-input no-op (Trax's None).
/// @code
/// auto two = Parallel({Dense(8), Relu()});       // (a [B, 4], b) -> (a @ w + c [B, 8], relu(b))
/// @endcode
LayerPtr Parallel(std::vector<LayerPtr> layers, SrcLoc where = SrcLoc::current());
/// Each layer gets copies of as many top items as it takes; outputs in order.
/// A nullptr entry is a one-input no-op (Trax's None). One layer: that layer.
/// @code
/// auto both = Branch({nullptr, Dense(4)});       // x [B, d] -> (x, Dense(x) [B, 4])
/// @endcode
LayerPtr Branch(std::vector<LayerPtr> layers, SrcLoc where = SrcLoc::current());
/// Serial(Branch(shortcut, Serial(layers)), Add()); shortcut nullptr = identity.
/// The layers must keep the shape of x.
/// @code
/// auto block = Residual({LayerNorm(), Dense(512), Relu()});   // x [B, L, 512] -> same shape
/// @endcode
LayerPtr Residual(std::vector<LayerPtr> layers, LayerPtr shortcut = nullptr,
                  SrcLoc where = SrcLoc::current());
/// Outputs the stack items at `indices` (n_in defaults to max index + 1).
/// @code
/// auto s = Select({0, 0, 1});                    // (a, b) -> (a, a, b)
/// @endcode
LayerPtr Select(std::vector<int> indices, int n_in = -1, SrcLoc where = SrcLoc::current());
/// x -> (x, x).
LayerPtr Dup(SrcLoc where = SrcLoc::current());
/// x -> nothing: removes the top item.
LayerPtr Drop(SrcLoc where = SrcLoc::current());
/// (a, b) -> (b, a).
LayerPtr Swap(SrcLoc where = SrcLoc::current());
/// (a, b) -> a + b, with numpy broadcasting.
LayerPtr Add(SrcLoc where = SrcLoc::current());
/// (a, b) -> a * b element-wise, with numpy broadcasting.
LayerPtr Multiply(SrcLoc where = SrcLoc::current());
/// x1 - x0 (the top item is subtracted from the second).
LayerPtr SubtractTop(SrcLoc where = SrcLoc::current());
/// n_items items -> one, concatenated along `axis`: ([B, L, 3], [B, L, 5]) -> [B, L, 8].
LayerPtr Concatenate(int n_items = 2, long axis = -1, SrcLoc where = SrcLoc::current());
/// One item -> n_items equal parts along `axis` (which must divide evenly):
/// [B, L, 8] -> ([B, L, 4], [B, L, 4]).
LayerPtr Split(int n_items = 2, long axis = -1, SrcLoc where = SrcLoc::current());
/// A layer from a function on n_in Vars giving n_out Vars.
/// @code
/// auto sum_diff = Fn("SumDiff", [](const Stack& xs) -> Stack {
///   return {fastmath::add(xs[0], xs[1]), fastmath::subtract(xs[0], xs[1])};
/// }, 2, 2);
/// @endcode
LayerPtr Fn(std::string name, FnLayer::Function f, int n_in = 1, int n_out = 1,
            SrcLoc where = SrcLoc::current());
/// A one-input, one-output layer from a function on one Var.
/// @code
/// auto twice = Fn("Twice", [](const Var& x) { return fastmath::multiply(x, 2.0); });
/// @endcode
LayerPtr Fn(std::string name, std::function<base::Var(const base::Var&)> f,
            SrcLoc where = SrcLoc::current());

}  // namespace minitrax::layers
