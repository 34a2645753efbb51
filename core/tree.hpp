// minitrax/core/tree.hpp: nested containers of leaves (weights, state, gradients).
//
// Trax keeps weights and state as nested tuples mirroring the layer tree; a
// Tree<T> is that: either one leaf of type T or a list of subtrees (possibly
// empty, Trax's `()`). Tree<Tensor> holds weights; Tree<Var> holds the same
// weights while a tape records. flatten/unflatten go to and from a flat list in
// depth-first order, which is the order of the flat, named views.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.hpp"

namespace minitrax::core {

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

  bool is_leaf() const { return std::holds_alternative<T>(node_); }
  const T& leaf() const {
    if (!is_leaf()) throw ValueError("Tree::leaf: this node is a list");
    return std::get<T>(node_);
  }
  T& leaf() {
    if (!is_leaf()) throw ValueError("Tree::leaf: this node is a list");
    return std::get<T>(node_);
  }
  const std::vector<Tree>& children() const {
    if (is_leaf()) throw ValueError("Tree::children: this node is a leaf");
    return std::get<std::vector<Tree>>(node_);
  }
  std::vector<Tree>& children() {
    if (is_leaf()) throw ValueError("Tree::children: this node is a leaf");
    return std::get<std::vector<Tree>>(node_);
  }
  std::size_t size() const { return is_leaf() ? 0 : children().size(); }
  const Tree& operator[](std::size_t i) const { return children().at(i); }
  Tree& operator[](std::size_t i) { return children().at(i); }
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
  void flatten_into(std::vector<T>& out) const {
    if (is_leaf()) {
      out.push_back(leaf());
    } else {
      for (const Tree& c : children()) c.flatten_into(out);
    }
  }

  /// A tree shaped like `structure` with leaves taken in order from `flat`.
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

  /// Applies f to every leaf, keeping the structure.
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
