/// @file
/// Nested containers of leaves (weights, state, gradients): Tree.
///
/// Trax keeps weights and state as nested tuples mirroring the layer tree; a
/// `Tree<T>` is that: either one leaf of type T or a list of subtrees (possibly
/// empty, Trax's `()`). `Tree<Tensor>` holds weights; `Tree<Var>` holds the same
/// weights while a tape records. flatten/unflatten go to and from a flat list in
/// depth-first order, which is the order of the flat, named views.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.hpp"

namespace minitrax::core {

/// Either one leaf of type T or a list of subtrees (possibly empty, Trax's `()`): the
/// shape of a layer's weights or state, as Trax's nested tuples.
///
/// Accessing a leaf of a list node, or the children of a leaf, is a ValueError.
/// @code
/// using W = Tree<Tensor>;
/// W dense = W::list({Tensor::zeros({4, 8}), Tensor::zeros({8})});  // (w, b)
/// W model = W::list({dense, W(), dense});                           // ((w, b), (), (w, b))
/// std::size_t n = model.n_leaves();                                 // 4
/// std::vector<Tensor> flat = model.flatten();                       // w, b, w, b
/// W copy = W::unflatten(model, flat);                               // same structure
/// Tree<Shape> shapes = model.map([](const Tensor& t) { return t.shape(); });
/// @endcode
template <class T>
class Tree {
 public:
  /// An empty node (no leaves), like Trax's `()`.
  Tree() : node_(std::vector<Tree>{}) {}
  /// A leaf.
  Tree(T leaf) : node_(std::move(leaf)) {}  // NOLINT(google-explicit-constructor)
  /// A node with children.
  static Tree list(std::vector<Tree> children) {
    Tree t;
    t.node_ = std::move(children);
    return t;
  }

  /// True for a leaf, false for a list (also an empty one).
  bool is_leaf() const { return std::holds_alternative<T>(node_); }
  /// The leaf's value; ValueError if this node is a list.
  const T& leaf() const {
    if (!is_leaf()) throw ValueError("Tree::leaf: this node is a list");
    return std::get<T>(node_);
  }
  /// The leaf's value, writable; ValueError if this node is a list.
  T& leaf() {
    if (!is_leaf()) throw ValueError("Tree::leaf: this node is a list");
    return std::get<T>(node_);
  }
  /// The subtrees of a list node; ValueError if this node is a leaf.
  const std::vector<Tree>& children() const {
    if (is_leaf()) throw ValueError("Tree::children: this node is a leaf");
    return std::get<std::vector<Tree>>(node_);
  }
  /// The subtrees of a list node, writable; ValueError if this node is a leaf.
  std::vector<Tree>& children() {
    if (is_leaf()) throw ValueError("Tree::children: this node is a leaf");
    return std::get<std::vector<Tree>>(node_);
  }
  /// Number of children (0 for a leaf and for an empty list).
  std::size_t size() const { return is_leaf() ? 0 : children().size(); }
  /// Child `i` (bounds-checked: std::out_of_range); ValueError if this node is a leaf.
  const Tree& operator[](std::size_t i) const { return children().at(i); }
  /// Child `i`, writable (bounds-checked); ValueError if this node is a leaf.
  Tree& operator[](std::size_t i) { return children().at(i); }
  /// Appends a child to a list node; ValueError if this node is a leaf.
  void push_back(Tree child) { children().push_back(std::move(child)); }

  /// Number of leaves.
  std::size_t n_leaves() const {
    if (is_leaf()) return 1;
    std::size_t n = 0;
    for (const Tree& c : children()) n += c.n_leaves();
    return n;
  }

  /// Leaves in depth-first order.
  std::vector<T> flatten() const {
    std::vector<T> out;
    flatten_into(out);
    return out;
  }
  /// Appends the leaves in depth-first order to `out`.
  void flatten_into(std::vector<T>& out) const {
    if (is_leaf()) {
      out.push_back(leaf());
    } else {
      for (const Tree& c : children()) c.flatten_into(out);
    }
  }

  /// A tree shaped like `structure` with leaves taken in order from `flat`. The
  /// structure's leaf type U may differ from T; ValueError unless `flat` holds exactly
  /// `structure.n_leaves()` values.
  template <class U>
  static Tree unflatten(const Tree<U>& structure, const std::vector<T>& flat) {
    std::size_t pos = 0;
    Tree t = unflatten_from(structure, flat, pos);
    if (pos != flat.size()) {
      throw ValueError("Tree::unflatten: the structure has " + std::to_string(pos) +
                       " leaves but " + std::to_string(flat.size()) + " values were given");
    }
    return t;
  }

  /// Applies f to every leaf, keeping the structure: a `Tree<U>` with U the type f returns.
  template <class F>
  auto map(F&& f) const -> Tree<decltype(f(std::declval<const T&>()))> {
    using U = decltype(f(std::declval<const T&>()));
    if (is_leaf()) return Tree<U>(f(leaf()));
    std::vector<Tree<U>> kids;
    kids.reserve(children().size());
    for (const Tree& c : children()) kids.push_back(c.map(f));
    return Tree<U>::list(std::move(kids));
  }

 private:
  template <class U>
  static Tree unflatten_from(const Tree<U>& structure, const std::vector<T>& flat,
                             std::size_t& pos) {
    if (structure.is_leaf()) {
      if (pos >= flat.size()) {
        throw ValueError("Tree::unflatten: ran out of values after " + std::to_string(pos));
      }
      return Tree(flat[pos++]);
    }
    std::vector<Tree> kids;
    kids.reserve(structure.children().size());
    for (const auto& c : structure.children()) kids.push_back(unflatten_from(c, flat, pos));
    return list(std::move(kids));
  }

  std::variant<T, std::vector<Tree>> node_;
};

}  // namespace minitrax::core

namespace minitrax {
using core::Tree;
}  // namespace minitrax
