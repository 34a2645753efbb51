// minitrax/core/ops_layout.cpp: transposes, concatenation, splits, slices, pads, rolls.
//
// Everything here moves elements without looking at them, so most loops work on raw
// bytes (memcpy of contiguous chunks) and transposes on 4- or 8-byte words, whatever
// the dtype.
//
// transpose first simplifies the permutation: axes of extent 1 are dropped and output
// axes that are consecutive input axes are merged. What remains is either a copy of
// contiguous rows (the innermost axis stays innermost) or a batch of 2-D transposes
// (input axis a becomes the output's innermost axis while the input's innermost axis
// moves out), done in 32x32 tiles so both the reads and the writes stay in cache.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/ops.hpp"
#include "core/ops_internal.hpp"

namespace minitrax::core {

using namespace ops_internal;

namespace {

/// Calls f(off_a, off_b) for every multi-index over `dims`, with offsets accumulated
/// from two stride arrays. Does nothing if an extent is 0; once if `dims` is empty.
template <class F>
void for_each_index(const std::vector<std::size_t>& dims, const std::vector<std::size_t>& sa,
                    const std::vector<std::size_t>& sb, F&& f) {
  for (std::size_t d : dims) {
    if (d == 0) return;
  }
  const std::size_t rank = dims.size();
  std::vector<std::size_t> idx(rank, 0);
  std::size_t a = 0, b = 0;
  for (;;) {
    f(a, b);
    std::size_t ax = rank;
    for (;;) {
      if (ax == 0) return;
      --ax;
      if (++idx[ax] < dims[ax]) {
        a += sa[ax];
        b += sb[ax];
        break;
      }
      idx[ax] = 0;
      a -= sa[ax] * (dims[ax] - 1);
      b -= sb[ax] * (dims[ax] - 1);
    }
  }
}

/// "[2, *, 4]": `shape` with axis `axis` shown as *.
std::string shape_pattern(const Shape& shape, std::size_t axis) {
  std::string r = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    r += (i ? ", " : "");
    r += i == axis ? std::string("*") : std::to_string(shape[i]);
  }
  return r + "]";
}

/// The product of extents before and after `axis`.
std::pair<std::size_t, std::size_t> outer_inner(const Shape& shape, std::size_t axis) {
  std::size_t outer = 1, inner = 1;
  for (std::size_t i = 0; i < axis; ++i) outer *= shape[i];
  for (std::size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
  return {outer, inner};
}

/// Copies `count` chunks of `chunk` bytes: dst is dense, src chunks are `stride` bytes
/// apart (or the reverse when `scatter`: src dense, dst strided).
void copy_chunks(char* dst, const char* src, std::size_t count, std::size_t chunk,
                 std::size_t stride, bool scatter) {
  auto run = [&](auto word) {
    using W = decltype(word);
    for (std::size_t i = 0; i < count; ++i) {
      W w;
      const char* from = scatter ? src + i * chunk : src + i * stride;
      char* to = scatter ? dst + i * stride : dst + i * chunk;
      std::memcpy(&w, from, sizeof(W));
      std::memcpy(to, &w, sizeof(W));
    }
  };
  if (chunk == 4) {
    run(std::uint32_t{});
  } else if (chunk == 8) {
    run(std::uint64_t{});
  } else {
    for (std::size_t i = 0; i < count; ++i) {
      if (scatter) {
        std::memcpy(dst + i * stride, src + i * chunk, chunk);
      } else {
        std::memcpy(dst + i * chunk, src + i * stride, chunk);
      }
    }
  }
}

// ---- transpose ------------------------------------------------------------------

template <class W>
void permute_copy(const W* in, W* out, const Shape& shape, const std::vector<std::size_t>& perm) {
  const std::size_t r = shape.size();
  // 1. Drop axes of extent 1.
  std::vector<std::size_t> new_index(r, 0);
  Shape s1;
  for (std::size_t i = 0; i < r; ++i) {
    if (shape[i] != 1) {
      new_index[i] = s1.size();
      s1.push_back(shape[i]);
    }
  }
  std::vector<std::size_t> p1;
  for (std::size_t k = 0; k < r; ++k) {
    if (shape[perm[k]] != 1) p1.push_back(new_index[perm[k]]);
  }
  // 2. Merge output axes that are consecutive input axes: groups of input axes, in output order.
  std::vector<std::pair<std::size_t, std::size_t>> groups;  // (first input axis, count)
  for (std::size_t a : p1) {
    if (!groups.empty() && groups.back().first + groups.back().second == a) {
      ++groups.back().second;
    } else {
      groups.push_back({a, 1});
    }
  }
  const std::size_t m = groups.size();
  const std::size_t total = shape_size(shape);
  if (m <= 1) {
    std::memcpy(out, in, total * sizeof(W));
    return;
  }
  // Merged input shape: groups sorted by their first input axis; p2 maps output -> input.
  std::vector<std::size_t> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t x, std::size_t y) { return groups[x].first < groups[y].first; });
  std::vector<std::size_t> p2(m), s2(m);
  for (std::size_t rank = 0; rank < m; ++rank) {
    const auto [first, count] = groups[order[rank]];
    p2[order[rank]] = rank;
    std::size_t e = 1;
    for (std::size_t i = first; i < first + count; ++i) e *= s1[i];
    s2[rank] = e;
  }
  const std::vector<std::size_t> in_st = contiguous_strides(s2);
  Shape o2(m);
  for (std::size_t k = 0; k < m; ++k) o2[k] = s2[p2[k]];
  const std::vector<std::size_t> out_st = contiguous_strides(o2);
  std::vector<std::size_t> ist(m);  // input stride of each output axis
  for (std::size_t k = 0; k < m; ++k) ist[k] = in_st[p2[k]];

  if (p2[m - 1] == m - 1) {
    // 3a. The innermost axis stays innermost: copy contiguous rows.
    const std::size_t len = o2[m - 1];
    std::vector<std::size_t> dims(o2.begin(), o2.end() - 1), si(ist.begin(), ist.end() - 1),
        so(out_st.begin(), out_st.end() - 1);
    for_each_index(dims, si, so, [&](std::size_t io, std::size_t oo) {
      std::memcpy(out + oo, in + io, len * sizeof(W));
    });
    return;
  }
  // 3b. A batch of 2-D transposes: out[j * sq + i] = in[i * sa + j], with i along the
  // output's innermost axis and j along the input's innermost axis (output axis q).
  const std::size_t q =
      static_cast<std::size_t>(std::find(p2.begin(), p2.end(), m - 1) - p2.begin());
  const std::size_t sa = ist[m - 1], sq = out_st[q];
  const std::size_t na = o2[m - 1], nb = o2[q];
  std::vector<std::size_t> dims, si, so;
  for (std::size_t k = 0; k + 1 < m; ++k) {
    if (k == q) continue;
    dims.push_back(o2[k]);
    si.push_back(ist[k]);
    so.push_back(out_st[k]);
  }
  constexpr std::size_t tile = 32;
  for_each_index(dims, si, so, [&](std::size_t io, std::size_t oo) {
    const W* src = in + io;
    W* dst = out + oo;
    for (std::size_t i0 = 0; i0 < na; i0 += tile) {
      const std::size_t i1 = std::min(na, i0 + tile);
      for (std::size_t j0 = 0; j0 < nb; j0 += tile) {
        const std::size_t j1 = std::min(nb, j0 + tile);
        for (std::size_t j = j0; j < j1; ++j) {
          W* d = dst + j * sq;
          const W* sp = src + j;
          for (std::size_t i = i0; i < i1; ++i) d[i] = sp[i * sa];
        }
      }
    }
  });
}

}  // namespace

Tensor transpose(const Tensor& x, const std::vector<std::size_t>& perm_in) {
  need_defined("transpose", x);
  const std::size_t r = x.ndim();
  std::vector<std::size_t> perm = perm_in;
  if (perm.empty()) {
    perm.resize(r);
    for (std::size_t k = 0; k < r; ++k) perm[k] = r - 1 - k;
  }
  bool ok = perm.size() == r;
  std::vector<bool> seen(r, false);
  for (std::size_t k = 0; ok && k < r; ++k) {
    if (perm[k] >= r || seen[perm[k]]) {
      ok = false;
    } else {
      seen[perm[k]] = true;
    }
  }
  if (!ok) {
    std::string p = "[";
    for (std::size_t k = 0; k < perm.size(); ++k) p += (k ? ", " : "") + std::to_string(perm[k]);
    throw ValueError("transpose: perm " + p + "] is not a permutation of the " + std::to_string(r) +
                     " axes of shape " + shape_str(x.shape()));
  }
  Shape out_shape(r);
  for (std::size_t k = 0; k < r; ++k) out_shape[k] = x.shape()[perm[k]];
  Tensor out = Tensor::empty(out_shape, x.dtype(), "transpose");
  if (out.size() == 0) return out;
  if (dtype_size(x.dtype()) == 4) {
    permute_copy(static_cast<const std::uint32_t*>(x.raw_data()),
                 static_cast<std::uint32_t*>(out.raw_data()), x.shape(), perm);
  } else {
    permute_copy(static_cast<const std::uint64_t*>(x.raw_data()),
                 static_cast<std::uint64_t*>(out.raw_data()), x.shape(), perm);
  }
  return out;
}

Tensor swap_last_two(const Tensor& x) {
  need_defined("swap_last_two", x);
  const std::size_t r = x.ndim();
  if (r < 2) {
    throw ShapeError("swap_last_two: needs a tensor of rank >= 2, got shape " +
                     shape_str(x.shape()));
  }
  std::vector<std::size_t> perm(r);
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[r - 1], perm[r - 2]);
  return transpose(x, perm);
}

// ---- rank changes ------------------------------------------------------------------

Tensor expand_dims(const Tensor& x, long axis) {
  need_defined("expand_dims", x);
  const long r = static_cast<long>(x.ndim());
  if (axis < -(r + 1) || axis > r) {
    throw ValueError("expand_dims: axis " + std::to_string(axis) +
                     " is out of range for a tensor of shape " + shape_str(x.shape()) +
                     " (allowed: " + std::to_string(-(r + 1)) + " to " + std::to_string(r) + ")");
  }
  const std::size_t a = static_cast<std::size_t>(axis < 0 ? axis + r + 1 : axis);
  Shape shape = x.shape();
  shape.insert(shape.begin() + static_cast<std::ptrdiff_t>(a), 1);
  return x.clone().reshape(shape);
}

Tensor squeeze(const Tensor& x, const std::vector<long>& axes) {
  need_defined("squeeze", x);
  const std::vector<std::size_t> ax = normalize_axes(axes, x.ndim(), "squeeze", false);
  std::vector<bool> drop(x.ndim(), false);
  if (ax.empty()) {
    for (std::size_t i = 0; i < x.ndim(); ++i) drop[i] = x.shape()[i] == 1;
  }
  for (std::size_t a : ax) {
    if (x.shape()[a] != 1) {
      throw ShapeError("squeeze: axis " + std::to_string(a) + " of shape " + shape_str(x.shape()) +
                       " has extent " + std::to_string(x.shape()[a]) + ", not 1");
    }
    drop[a] = true;
  }
  Shape shape;
  for (std::size_t i = 0; i < x.ndim(); ++i) {
    if (!drop[i]) shape.push_back(x.shape()[i]);
  }
  return x.clone().reshape(shape);
}

// ---- concatenate and split ------------------------------------------------------------

Tensor concatenate(const std::vector<Tensor>& xs, long axis) {
  if (xs.empty()) throw ValueError("concatenate: needs at least one tensor, got none");
  for (std::size_t i = 0; i < xs.size(); ++i) {
    need_defined("concatenate", xs[i], "input " + std::to_string(i));
  }
  const Tensor& x0 = xs[0];
  if (x0.ndim() == 0) {
    throw ShapeError("concatenate: cannot concatenate rank-0 tensors (input 0 has shape [])");
  }
  const std::size_t ax = normalize_axis(axis, x0.ndim(), "concatenate");
  std::size_t total = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Tensor& xi = xs[i];
    if (xi.dtype() != x0.dtype()) {
      throw DTypeError("concatenate: input " + std::to_string(i) + " has dtype " +
                       dname(xi.dtype()) + ", expected " + dname(x0.dtype()) +
                       " (the dtype of input 0)");
    }
    bool ok = xi.ndim() == x0.ndim();
    for (std::size_t d = 0; ok && d < x0.ndim(); ++d) {
      if (d != ax && xi.shape()[d] != x0.shape()[d]) ok = false;
    }
    if (!ok) {
      throw ShapeError("concatenate: input " + std::to_string(i) + " has shape " +
                       shape_str(xi.shape()) + ", expected " + shape_pattern(x0.shape(), ax) +
                       " with rank " + std::to_string(x0.ndim()) +
                       " and matching extents except axis " + std::to_string(ax));
    }
    total = checked_add(total, xi.shape()[ax], "concatenate");
  }
  Shape shape = x0.shape();
  shape[ax] = total;
  Tensor out = Tensor::empty(shape, x0.dtype(), "concatenate");
  if (out.size() == 0) return out;
  const auto [outer, inner] = outer_inner(shape, ax);
  const std::size_t es = dtype_size(x0.dtype());
  char* dst = static_cast<char*>(out.raw_data());
  std::size_t at = 0;  // byte offset of the current input within an output row
  const std::size_t row = total * inner * es;
  for (const Tensor& xi : xs) {
    const std::size_t chunk = xi.shape()[ax] * inner * es;
    if (chunk == 0) continue;
    const char* src = static_cast<const char*>(xi.raw_data());
    for (std::size_t o = 0; o < outer; ++o) std::memcpy(dst + o * row + at, src + o * chunk, chunk);
    at += chunk;
  }
  return out;
}

namespace {

/// x[start:start+len] along `ax` (already validated).
Tensor take_range(const Tensor& x, std::size_t ax, std::size_t start, std::size_t len) {
  Shape shape = x.shape();
  shape[ax] = len;
  Tensor out = Tensor::empty(shape, x.dtype(), "split");
  if (out.size() == 0) return out;
  const auto [outer, inner] = outer_inner(x.shape(), ax);
  const std::size_t es = dtype_size(x.dtype());
  const std::size_t chunk = len * inner * es, row = x.shape()[ax] * inner * es;
  const char* src = static_cast<const char*>(x.raw_data()) + start * inner * es;
  char* dst = static_cast<char*>(out.raw_data());
  for (std::size_t o = 0; o < outer; ++o) std::memcpy(dst + o * chunk, src + o * row, chunk);
  return out;
}

}  // namespace

std::vector<Tensor> split(const Tensor& x, const std::vector<std::size_t>& sizes, long axis) {
  need_defined("split", x);
  const std::size_t ax = normalize_axis(axis, x.ndim(), "split");
  std::size_t total = 0;
  bool overflow = false;
  for (std::size_t len : sizes) overflow |= __builtin_add_overflow(total, len, &total);
  if (overflow || total != x.shape()[ax]) {
    std::string list = "[";
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      list += (i ? ", " : "") + std::to_string(sizes[i]);
    }
    throw ShapeError(
        "split: sizes " + list + "] add up to " +
        (overflow ? std::string("more than a 64-bit count holds") : std::to_string(total)) +
        ", but axis " + std::to_string(ax) + " of shape " + shape_str(x.shape()) + " has extent " +
        std::to_string(x.shape()[ax]));
  }
  std::vector<Tensor> parts;
  parts.reserve(sizes.size());
  std::size_t start = 0;
  for (std::size_t len : sizes) {
    parts.push_back(take_range(x, ax, start, len));
    start += len;
  }
  return parts;
}

std::vector<Tensor> split(const Tensor& x, std::size_t n, long axis) {
  need_defined("split", x);
  const std::size_t ax = normalize_axis(axis, x.ndim(), "split");
  if (n == 0) throw ValueError("split: cannot split into 0 parts");
  const std::size_t e = x.shape()[ax];
  if (e % n != 0) {
    throw ShapeError("split: axis " + std::to_string(ax) + " of shape " + shape_str(x.shape()) +
                     " has extent " + std::to_string(e) + ", which does not divide into " +
                     std::to_string(n) + " equal parts");
  }
  std::vector<std::size_t> sizes;
  try {
    sizes.assign(n, e / n);          // n can be huge only when e is 0 (n empty parts)
  } catch (const std::exception&) {  // bad_alloc, length_error
    throw AllocationError("split: cannot make " + std::to_string(n) + " parts of axis " +
                          std::to_string(ax) + " of shape " + shape_str(x.shape()) +
                          " (out of memory)");
  }
  return split(x, sizes, axis);
}

// ---- slices ------------------------------------------------------------------------

namespace {

struct SliceSpec {
  std::size_t axis, start, count, step;
};

/// Python slice semantics for a positive step: negative start/stop count from the end,
/// then both are clamped to [0, extent].
SliceSpec slice_spec(std::string_view op, const Shape& shape, long axis, long start, long stop,
                     long step) {
  if (step <= 0) {
    throw ValueError(s(op) + ": step must be >= 1, got " + std::to_string(step));
  }
  if (shape.empty()) {
    throw ShapeError(s(op) + ": cannot slice a rank-0 tensor (shape [])");
  }
  const std::size_t ax = normalize_axis(axis, shape.size(), op);
  const long n = static_cast<long>(shape[ax]);
  auto norm = [n](long v) {
    if (v < 0) v += n;
    return std::clamp(v, 0L, n);
  };
  const long b = norm(start), e = norm(stop);
  const long count = e > b ? (e - b - 1) / step + 1 : 0;
  return {ax, static_cast<std::size_t>(b), static_cast<std::size_t>(count),
          static_cast<std::size_t>(step)};
}

/// Copies between x (the full tensor, shape `full`) and its slice (dense): gather when
/// `to_slice`, scatter otherwise.
void slice_copy(const SliceSpec& sp, const Shape& full, std::size_t es, const char* src, char* dst,
                bool to_slice) {
  const auto [outer, inner] = outer_inner(full, sp.axis);
  const std::size_t chunk = inner * es;
  const std::size_t full_row = full[sp.axis] * chunk, slice_row = sp.count * chunk;
  for (std::size_t o = 0; o < outer; ++o) {
    if (to_slice) {
      const char* from = src + o * full_row + sp.start * chunk;
      char* to = dst + o * slice_row;
      if (sp.step == 1) {
        std::memcpy(to, from, slice_row);
      } else {
        copy_chunks(to, from, sp.count, chunk, sp.step * chunk, false);
      }
    } else {
      const char* from = src + o * slice_row;
      char* to = dst + o * full_row + sp.start * chunk;
      if (sp.step == 1) {
        std::memcpy(to, from, slice_row);
      } else {
        copy_chunks(to, from, sp.count, chunk, sp.step * chunk, true);
      }
    }
  }
}

}  // namespace

Tensor slice(const Tensor& x, long axis, long start, long stop, long step) {
  need_defined("slice", x);
  const SliceSpec sp = slice_spec("slice", x.shape(), axis, start, stop, step);
  Shape shape = x.shape();
  shape[sp.axis] = sp.count;
  Tensor out = Tensor::empty(shape, x.dtype(), "slice");
  if (out.size() == 0) return out;
  slice_copy(sp, x.shape(), dtype_size(x.dtype()), static_cast<const char*>(x.raw_data()),
             static_cast<char*>(out.raw_data()), true);
  return out;
}

Tensor slice_backward(const Tensor& src, const Shape& shape, long axis, long start, long stop,
                      long step) {
  need_defined("slice_backward", src, "src");
  const SliceSpec sp = slice_spec("slice_backward", shape, axis, start, stop, step);
  Shape want = shape;
  want[sp.axis] = sp.count;
  if (src.shape() != want) {
    throw ShapeError("slice_backward: src has shape " + shape_str(src.shape()) + ", but slicing " +
                     shape_str(shape) + " along axis " + std::to_string(sp.axis) + " with " +
                     std::to_string(start) + ":" + std::to_string(stop) + ":" +
                     std::to_string(step) + " gives " + shape_str(want));
  }
  Tensor out = Tensor::zeros(shape, src.dtype(), "slice_backward");
  if (src.size() == 0) return out;
  slice_copy(sp, shape, dtype_size(src.dtype()), static_cast<const char*>(src.raw_data()),
             static_cast<char*>(out.raw_data()), false);
  return out;
}

// ---- pad and roll --------------------------------------------------------------------

Tensor pad(const Tensor& x, const std::vector<std::pair<std::size_t, std::size_t>>& pads,
           double value) {
  need_defined("pad", x);
  const std::size_t r = x.ndim();
  if (pads.size() != r) {
    throw ValueError("pad: got " + std::to_string(pads.size()) +
                     " (before, after) pairs for a tensor of rank " + std::to_string(r) +
                     " (shape " + shape_str(x.shape()) + "); give one pair per axis");
  }
  Shape shape = x.shape();
  for (std::size_t i = 0; i < r; ++i) {
    shape[i] = checked_add(checked_add(shape[i], pads[i].first, "pad"), pads[i].second, "pad");
  }
  Tensor out = Tensor::empty(shape, x.dtype(), "pad");
  dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = scalar_as<T>(value, "pad", "value");
    if (out.size() > 0) std::fill_n(out.data<T>(), out.size(), v);
  });
  if (x.size() == 0) return out;
  if (r == 0) {
    std::memcpy(out.raw_data(), x.raw_data(), x.nbytes());
    return out;
  }
  const std::size_t es = dtype_size(x.dtype());
  const std::vector<std::size_t> ost = contiguous_strides(shape),
                                 xst = contiguous_strides(x.shape());
  std::size_t base = 0;
  for (std::size_t i = 0; i < r; ++i) base += pads[i].first * ost[i];
  std::vector<std::size_t> dims(x.shape().begin(), x.shape().end() - 1),
      sx(xst.begin(), xst.end() - 1), so(ost.begin(), ost.end() - 1);
  const std::size_t len = x.shape()[r - 1] * es;
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data()) + base * es;
  for_each_index(dims, sx, so, [&](std::size_t xo, std::size_t oo) {
    std::memcpy(dst + oo * es, src + xo * es, len);
  });
  return out;
}

Tensor roll(const Tensor& x, long shift, long axis) {
  need_defined("roll", x);
  if (x.ndim() == 0) throw ShapeError("roll: cannot roll a rank-0 tensor (shape [])");
  const std::size_t ax = normalize_axis(axis, x.ndim(), "roll");
  const long n = static_cast<long>(x.shape()[ax]);
  if (x.size() == 0) return x.clone();
  const std::size_t k = static_cast<std::size_t>(((shift % n) + n) % n);
  if (k == 0) return x.clone();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), "roll");
  const auto [outer, inner] = outer_inner(x.shape(), ax);
  const std::size_t es = dtype_size(x.dtype());
  const std::size_t row = static_cast<std::size_t>(n) * inner * es;
  const std::size_t head = (static_cast<std::size_t>(n) - k) * inner * es;  // bytes moved right
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (std::size_t o = 0; o < outer; ++o) {
    std::memcpy(dst + o * row + (row - head), src + o * row, head);
    std::memcpy(dst + o * row, src + o * row + head, row - head);
  }
  return out;
}

}  // namespace minitrax::core
