// minitrax/layers/combinators.hpp: layers made of layers, with Trax's stack semantics.
//
//   Serial({F, G, H})      applies F, then G, then H to the stack
//   Parallel({F, G})       F on the first F.n_in items, G on the next G.n_in
//   Branch({F, G})         F and G each on copies of the top of the stack
//   Residual({F, G})       x + G(F(x))
//   Select({0, 0, 1})      copies/reorders stack items
//   Dup, Drop, Swap, Add, Multiply, SubtractTop, Concatenate, Split
//   Fn("Name", f, n_in, n_out)   any C++ callable made a layer
//
// Each factory takes the creation site as its last (defaulted) argument, so
// errors point at the line of the model definition.
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
using SrcLoc = std::source_location;

/// Sublayers applied one after another on the stack. n_in/n_out come from one
/// fold over the sublayers; no sublayers is a one-input no-op.
class SerialLayer : public base::Layer {
 public:
  SerialLayer(std::vector<LayerPtr> layers, std::string name, SrcLoc where);

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;
};

/// Sublayers applied side by side to consecutive spans of the stack.
class ParallelLayer : public base::Layer {
 public:
  ParallelLayer(std::vector<LayerPtr> layers, std::string name, SrcLoc where);

 protected:
  Stack forward(const Stack& inputs) override;
  void init_weights_and_state(const Signature& input_signature) override;
  Signature forward_signature(const Signature& input_signature) override;
};

/// A layer from a function on the stack (Trax's Fn / PureLayer).
class FnLayer : public base::Layer {
 public:
  using Function = std::function<Stack(const Stack&)>;
  FnLayer(std::string name, Function f, int n_in, int n_out, SrcLoc where);

 protected:
  Stack forward(const Stack& inputs) override;

 private:
  Function f_;
};

LayerPtr Serial(std::vector<LayerPtr> layers, SrcLoc where = SrcLoc::current());
LayerPtr Serial(std::vector<LayerPtr> layers, std::string name, SrcLoc where = SrcLoc::current());
LayerPtr Parallel(std::vector<LayerPtr> layers, SrcLoc where = SrcLoc::current());
/// Each layer gets copies of as many top items as it takes; outputs in order.
/// A nullptr entry is a one-input no-op (Trax's None). One layer: that layer.
LayerPtr Branch(std::vector<LayerPtr> layers, SrcLoc where = SrcLoc::current());
/// Serial(Branch(shortcut, Serial(layers)), Add()); shortcut nullptr = identity.
LayerPtr Residual(std::vector<LayerPtr> layers, LayerPtr shortcut = nullptr,
                  SrcLoc where = SrcLoc::current());
/// Outputs the stack items at `indices` (n_in defaults to max index + 1).
LayerPtr Select(std::vector<int> indices, int n_in = -1, SrcLoc where = SrcLoc::current());
LayerPtr Dup(SrcLoc where = SrcLoc::current());
LayerPtr Drop(SrcLoc where = SrcLoc::current());
LayerPtr Swap(SrcLoc where = SrcLoc::current());
LayerPtr Add(SrcLoc where = SrcLoc::current());
LayerPtr Multiply(SrcLoc where = SrcLoc::current());
/// x1 - x0 (the top item is subtracted from the second).
LayerPtr SubtractTop(SrcLoc where = SrcLoc::current());
LayerPtr Concatenate(int n_items = 2, long axis = -1, SrcLoc where = SrcLoc::current());
LayerPtr Split(int n_items = 2, long axis = -1, SrcLoc where = SrcLoc::current());
/// A layer from a function on n_in Vars giving n_out Vars.
LayerPtr Fn(std::string name, FnLayer::Function f, int n_in = 1, int n_out = 1,
            SrcLoc where = SrcLoc::current());
/// A one-input, one-output layer from a function on one Var.
LayerPtr Fn(std::string name, std::function<base::Var(const base::Var&)> f,
            SrcLoc where = SrcLoc::current());

}  // namespace minitrax::layers
