// minitrax/layers/research/attention_ops.cpp: the efficient-attention helpers.
//
// This is the reference path: each function follows the steps of Trax 1.3.4's
// trax/layers/research/efficient_attention.py, with the same names for the
// intermediates (q_info, kv_info, dots, dots_logsumexp, keep, rotated_vecs,
// buckets, ticker, buckets_and_t, sticker, undo_sort) and one comment per step,
// so that it can be read beside the Python and stepped through in a debugger.
// Differentiable work goes through fastmath ops (one tape node each); integer
// metadata (positions, buckets, sort keys) is plain Tensors. See
// docs/efficient_attention.md for the shapes, the conventions and the places
// where we deliberately differ from Trax.
#include "layers/research/attention_ops.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>  // std::tie
#include <utility>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/error.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"

namespace minitrax::layers::research {

namespace fm = minitrax::fastmath;
using autodiff::tie_in;
using autodiff::VarList;
using core::DType;
using core::Shape;
using core::ShapeError;
using core::ValueError;
using Dims = std::vector<long>;  // a reshape target (one extent may be -1)

namespace {

// ---- argument checks (each error names the function and what it expected) --------

std::string str(const Shape& s) {
  return core::shape_str(s);
}

bool is_integer(DType d) {
  return d == DType::i32 || d == DType::i64;
}

void require_defined(const std::string& op, const std::string& what, bool defined) {
  if (!defined) throw ValueError(op + ": " + what + " is undefined");
}

void require_floating(const std::string& op, const std::string& what, const Var& x) {
  require_defined(op, what, x.defined());
  if (!core::is_floating(x.dtype())) {
    throw core::DTypeError(op + ": " + what + " must be float32 or float64, got " +
                           std::string(core::dtype_name(x.dtype())));
  }
}

void require_integer(const std::string& op, const std::string& what, const Tensor& x) {
  require_defined(op, what, x.defined());
  if (!is_integer(x.dtype())) {
    throw core::DTypeError(op + ": " + what + " must be int32 or int64, got " +
                           std::string(core::dtype_name(x.dtype())));
  }
}

void require_rank(const std::string& op, const std::string& what, const Shape& shape,
                  std::size_t rank, const std::string& expected) {
  if (shape.size() != rank) {
    throw ShapeError(op + ": " + what + " must be " + expected + ", got " + str(shape));
  }
}

void require_rate(const std::string& op, double rate) {
  if (!(rate >= 0.0 && rate < 1.0)) {
    throw ValueError(op + ": the dropout rate must be in [0, 1), got " + std::to_string(rate));
  }
}

/// An integer index tensor as int32 (positions and masks compare in one dtype).
Tensor as_int32(const Tensor& x) {
  return x.dtype() == DType::i32 ? x : x.astype(DType::i32);
}

/// Integer values of a 1-D index tensor, as int64.
std::vector<std::int64_t> index_values(const Tensor& x) {
  return x.to_vector<std::int64_t>();
}

/// Checks that `perm` is a permutation of 0..n-1 and `inverse` its inverse.
void require_inverse_permutations(const std::string& op, const Tensor& perm, const Tensor& inverse,
                                  std::size_t n) {
  for (const auto* t : {&perm, &inverse}) {
    const std::string what = t == &perm ? "the permutation" : "the inverse permutation";
    require_integer(op, what, *t);
    if (t->ndim() != 1 || t->size() != n) {
      throw ShapeError(op + ": " + what + " must be [" + std::to_string(n) +
                       "] (the extent of the permuted axis), got " + str(t->shape()));
    }
  }
  const auto p = index_values(perm), q = index_values(inverse);
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] < 0 || static_cast<std::size_t>(p[i]) >= n || q[i] < 0 ||
        static_cast<std::size_t>(q[i]) >= n) {
      throw ValueError(op + ": index out of range [0, " + std::to_string(n) + ") at position " +
                       std::to_string(i));
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<std::size_t>(q[static_cast<std::size_t>(p[i])]) != i) {
      throw ValueError(op + ": inverse_permutation[permutation[" + std::to_string(i) +
                       "]] != " + std::to_string(i) + ": not inverse permutations");
    }
  }
}

/// rot_size (the number of rotation directions, sum of the factors) and the number
/// of buckets per round (their product), after checking every factor is even.
std::pair<long, long> bucket_sizes(const std::string& op, const std::vector<long>& n_buckets) {
  if (n_buckets.empty()) throw ValueError(op + ": n_buckets needs at least one factor");
  long rot_size = 0, product = 1;
  for (long factor : n_buckets) {
    if (factor < 2 || factor % 2 != 0) {
      throw ValueError(op + ": every n_buckets factor must be even and >= 2, got " +
                       std::to_string(factor));
    }
    rot_size += factor;
    product *= factor;
    if (product > std::numeric_limits<std::int32_t>::max()) {
      throw ValueError(op + ": the number of buckets overflows int32");
    }
  }
  return {rot_size, product};
}

/// The chunk rotation of look_adjacent: concatenate([x[i:], x[:i]], axis 0) with
/// Python's slicing, so a shift of at least n_chunks (either way) leaves x as it is.
Var rotate_chunks(const Var& x, long i, long n_chunks) {
  if (i >= n_chunks || -i >= n_chunks) return x;  // x[i:] or x[:i] is empty: the identity
  const long start = i < 0 ? n_chunks + i : i;    // where x[i:] begins
  return fm::concatenate({fm::slice(x, 0, start, n_chunks), fm::slice(x, 0, 0, start)}, 0);
}

/// vecs * keep / keep_prob, for a keep mask drawn with `dropout_shape` that
/// broadcasts against vecs' trailing axes (attend's and apply_broadcasted_dropout's
/// shared step; Trax writes it out in both places).
Var dropout_with_keep_mask(const Var& vecs, double rate, Key rng, const Shape& dropout_shape) {
  // keep_prob = tie_in(vecs, 1 - rate): a constant tied to the activations
  Var keep_prob = tie_in(vecs, Tensor::scalar(1.0 - rate, vecs.dtype()));
  // keep ~ bernoulli(rng, keep_prob, dropout_shape): 1 = kept (float32 draws, as JAX)
  Tensor keep = core::bernoulli(rng, 1.0 - rate, dropout_shape);
  // multiplier = keep / tie_in(keep, keep_prob): the kept entries scaled up
  Var multiplier = Var(keep.astype(vecs.dtype())) / tie_in(Var(keep), keep_prob);
  return vecs * multiplier;
}

}  // namespace

// ---- length_normalized ----------------------------------------------------------

Var length_normalized(const Var& x, double epsilon) {
  const std::string op = "length_normalized";
  require_floating(op, "x", x);
  if (x.ndim() == 0) throw ShapeError(op + ": x must have at least one axis, got a scalar");
  // variance = mean(x^2) over the last axis (no centring: an RMS, not a variance)
  Var variance = fm::mean(fm::square(x), {-1}, /*keepdims=*/true);
  // norm_inputs = x / sqrt(variance + epsilon)
  Var norm_inputs = x / fm::sqrt(variance + epsilon);
  return norm_inputs;
}

// ---- look_adjacent ----------------------------------------------------------------

Var look_adjacent(const Var& x, long n_chunks_before, long n_chunks_after) {
  const std::string op = "look_adjacent";
  require_defined(op, "x", x.defined());
  if (n_chunks_before < 0 || n_chunks_after < 0) {
    throw ValueError(op + ": n_chunks_before and n_chunks_after must be >= 0, got " +
                     std::to_string(n_chunks_before) + " and " + std::to_string(n_chunks_after));
  }
  if (n_chunks_before == 0 && n_chunks_after == 0) return x;  // any shape (unchunked attend)
  if (x.ndim() < 2) {
    throw ShapeError(op + ": x must be [n_chunks, chunk_len, ...], got " + str(x.shape()));
  }

  const long n_chunks = static_cast<long>(x.dim(0));
  // For each offset i in [-before, ..., after], chunk c gets chunk c + i (mod n_chunks).
  VarList slices;
  for (long i = -n_chunks_before; i <= n_chunks_after; ++i) {
    slices.push_back(i == 0 ? x : rotate_chunks(x, i, n_chunks));
  }
  // Side by side along the time axis: [n_chunks, (1 + before + after) * chunk_len, ...]
  return fm::concatenate(slices, 1);
}

Tensor look_adjacent(const Tensor& x, long n_chunks_before, long n_chunks_after) {
  // The same steps on a constant: nothing is recorded, whatever tape is active.
  return look_adjacent(Var(x), n_chunks_before, n_chunks_after).value();
}

// ---- mask_self_attention -------------------------------------------------------------

Var mask_self_attention(const Var& dots, const Tensor& q_info, const Tensor& kv_info, bool causal,
                        bool exclude_self, bool masked) {
  const std::string op = "mask_self_attention";
  require_floating(op, "dots", dots);
  require_integer(op, "q_info", q_info);
  require_integer(op, "kv_info", kv_info);
  const Shape info_shape = core::broadcast_shapes(q_info.shape(), kv_info.shape(), op);
  if (core::broadcast_shapes(info_shape, dots.shape(), op) != dots.shape()) {
    throw ShapeError(op + ": q_info " + str(q_info.shape()) + " and kv_info " +
                     str(kv_info.shape()) + " must broadcast to dots " + str(dots.shape()));
  }
  const Tensor qi = as_int32(q_info), kvi = as_int32(kv_info);
  const DType dtype = dots.dtype();

  Var masked_dots = dots;
  if (causal) {
    // causal: no query sees a later position (q_info < kv_info): -1e9
    Tensor mask = core::less(qi, kvi).astype(dtype);
    masked_dots = masked_dots - 1e9 * Var(mask);
  }
  if (exclude_self) {
    // exclude_self: a query sees itself only when nothing else is left: -1e5
    Tensor mask = core::equal_to(qi, kvi).astype(dtype);
    masked_dots = masked_dots - 1e5 * Var(mask);
  }
  if (masked) {
    // padding: keys with negative kv_info are padding: -1e9
    // (Trax: zeros_like_kv_info = tie_in(kv_info, zeros_like(kv_info)); both are
    // integer constants here, so there is nothing to tie on the tape.)
    Tensor zeros_like_kv_info = Tensor::zeros_like(kvi);
    Tensor mask = core::less(kvi, zeros_like_kv_info).astype(dtype);
    masked_dots = masked_dots - 1e9 * Var(mask);
  }
  return masked_dots;
}

// ---- attend --------------------------------------------------------------------------

AttendResult attend(const Var& q_in, const Var& k_in, const Var& v_in,
                    const AttendOptions& options) {
  const std::string op = "attend";
  const bool share_qk = !k_in.defined();

  // -- checks: shapes, dtypes, chunking ----------------------------------------------
  require_floating(op, "q", q_in);
  require_floating(op, "v", v_in);
  require_rank(op, "q", q_in.shape(), 2, "[q_len, d_qk]");
  require_rank(op, "v", v_in.shape(), 2, "[kv_len, d_v]");
  if (v_in.dtype() != q_in.dtype()) {
    throw core::DTypeError(op + ": q and v must have the same dtype");
  }
  const long q_len = static_cast<long>(q_in.dim(0));
  const long d_qk = static_cast<long>(q_in.dim(1));
  const long kv_len = static_cast<long>(v_in.dim(0));
  const long d_v = static_cast<long>(v_in.dim(1));
  if (share_qk) {
    if (kv_len != q_len) {
      throw ShapeError(op + ": with shared keys (k undefined) v must have q's length " +
                       std::to_string(q_len) + ", got v " + str(v_in.shape()));
    }
  } else {
    require_floating(op, "k", k_in);
    require_rank(op, "k", k_in.shape(), 2, "[kv_len, d_qk]");
    if (k_in.dtype() != q_in.dtype()) {
      throw core::DTypeError(op + ": q and k must have the same dtype");
    }
    if (static_cast<long>(k_in.dim(0)) != kv_len || static_cast<long>(k_in.dim(1)) != d_qk) {
      throw ShapeError(op + ": k must be [kv_len, d_qk] = [" + std::to_string(kv_len) + ", " +
                       std::to_string(d_qk) + "] (v's length, q's depth), got " +
                       str(k_in.shape()));
    }
  }
  std::optional<long> q_chunk_len = options.q_chunk_len;
  std::optional<long> kv_chunk_len = options.kv_chunk_len;
  if (share_qk) {
    if (kv_chunk_len && kv_chunk_len != q_chunk_len) {
      throw ValueError(op + ": with shared keys kv_chunk_len must equal q_chunk_len");
    }
  } else if (q_chunk_len.has_value() != kv_chunk_len.has_value()) {
    throw ValueError(op +
                     ": chunk both queries and keys or neither (q_chunk_len and "
                     "kv_chunk_len must both be set)");
  }
  auto check_chunk_len = [&](long len, std::optional<long> chunk, const std::string& name) {
    if (!chunk) return;
    if (*chunk <= 0) {
      throw ValueError(op + ": " + name + "_chunk_len must be positive, got " +
                       std::to_string(*chunk));
    }
    if (len % *chunk != 0) {
      throw ValueError(op + ": " + name + " length " + std::to_string(len) +
                       " is not a multiple of " + name + "_chunk_len " + std::to_string(*chunk) +
                       " (pad it to " + std::to_string((len / *chunk + 1) * *chunk) + ")");
    }
  };
  check_chunk_len(q_len, q_chunk_len, "q");
  if (!share_qk) check_chunk_len(kv_len, kv_chunk_len, "kv");
  if (!q_chunk_len && (options.n_chunks_before != 0 || options.n_chunks_after != 0)) {
    throw ValueError(op + ": n_chunks_before / n_chunks_after need chunking (q_chunk_len)");
  }
  if (!share_qk && q_chunk_len && q_len / *q_chunk_len != kv_len / *kv_chunk_len) {
    throw ValueError(op + ": queries and keys must make the same number of chunks, got " +
                     std::to_string(q_len / *q_chunk_len) + " and " +
                     std::to_string(kv_len / *kv_chunk_len));
  }
  require_rate(op, options.dropout);
  auto check_info = [&](const Tensor& info, const char* what, long len) {
    if (!info.defined()) return;
    require_integer(op, what, info);
    if (info.ndim() != 1 || static_cast<long>(info.size()) != len) {
      throw ShapeError(op + ": " + what + " must be [" + std::to_string(len) + "], got " +
                       str(info.shape()));
    }
  };
  check_info(options.q_info, "q_info", q_len);
  check_info(options.kv_info, "kv_info", kv_len);

  // -- the computation -----------------------------------------------------------------
  Var q = q_in, k = k_in, v = v_in;

  // q_info / kv_info: the positions masks compare; arange by default.
  Tensor q_info = options.q_info.defined() ? as_int32(options.q_info)
                                           : Tensor::arange(static_cast<std::size_t>(q_len));
  Tensor kv_info;
  if (options.kv_info.defined()) {
    kv_info = as_int32(options.kv_info);
  } else if (!share_qk) {
    kv_info = Tensor::arange(static_cast<std::size_t>(kv_len));
  }

  // Split q and q_info into chunks along the time axis: [n_chunks, q_chunk_len, ...].
  if (q_chunk_len) {
    q = fm::reshape(q, {-1, *q_chunk_len, d_qk});
    q_info = q_info.reshape(Dims{-1, *q_chunk_len});
  }

  if (share_qk) {
    // Shared-QK: the keys are the (chunked) queries; kv_info defaults to q_info.
    k = q;
    kv_chunk_len = q_chunk_len;
    if (!kv_info.defined()) {
      kv_info = q_info;
    } else if (kv_chunk_len) {
      kv_info = kv_info.reshape(Dims{-1, *kv_chunk_len});
    }
  } else if (kv_chunk_len) {
    // Separate keys: chunk them and their positions like the queries.
    k = fm::reshape(k, {-1, *kv_chunk_len, d_qk});
    kv_info = kv_info.reshape(Dims{-1, *kv_chunk_len});
  }
  if (kv_chunk_len) v = fm::reshape(v, {-1, *kv_chunk_len, d_v});

  // Keys: RMS-normalised when shared with the queries, then every key / sqrt(d_qk).
  // (Queries are never scaled.)
  if (share_qk) k = length_normalized(k);
  k = fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(d_qk)), k.dtype()));

  // Each chunk also sees n_chunks_before earlier and n_chunks_after later chunks
  // (wrapping around): keys, values and their positions alike.
  k = look_adjacent(k, options.n_chunks_before, options.n_chunks_after);
  v = look_adjacent(v, options.n_chunks_before, options.n_chunks_after);
  kv_info = look_adjacent(kv_info, options.n_chunks_before, options.n_chunks_after);

  // dots = q @ k^T: [n_chunks, q_chunk_len, window] (or [q_len, kv_len] unchunked).
  Var dots = fm::matmul(q, k, core::Trans::N, core::Trans::T);

  // Masking: q_info[..., :, None] against kv_info[..., None, :].
  if (options.mask_fn) {
    Shape q_col = q_info.shape(), kv_row = kv_info.shape();
    q_col.push_back(1);
    kv_row.insert(kv_row.end() - 1, 1);
    dots = options.mask_fn(dots, q_info.reshape(q_col), kv_info.reshape(kv_row));
  }

  // Softmax, keeping its normaliser: dots_logsumexp [..., q, 1].
  Var dots_logsumexp = fm::logsumexp(dots, {-1}, /*keepdims=*/true);
  dots = fm::exp(dots - dots_logsumexp);

  // Attention dropout: one keep mask [q_chunk_len, window], broadcast over all chunks.
  if (options.dropout > 0.0) {
    const Shape dropout_shape{dots.dim(-2), dots.dim(-1)};
    dots = dropout_with_keep_mask(dots, options.dropout, options.rng, dropout_shape);
  }

  // out = probabilities @ v, back to [q_len, d_v]; the normaliser to [q_len].
  Var out = fm::matmul(dots, v);
  out = fm::reshape(out, {-1, d_v});
  dots_logsumexp = fm::reshape(dots_logsumexp, {-1});
  return {out, dots_logsumexp};
}

// ---- apply_broadcasted_dropout -----------------------------------------------------------

Var apply_broadcasted_dropout(const Var& vecs, double rate, Key rng) {
  const std::string op = "apply_broadcasted_dropout";
  require_floating(op, "vecs", vecs);
  require_rate(op, rate);
  if (rate == 0.0) return vecs;
  if (vecs.ndim() == 0) throw ShapeError(op + ": vecs must have at least one axis");
  // One keep mask over the last axis [d], shared by every position.
  return dropout_with_keep_mask(vecs, rate, rng, Shape{vecs.dim(-1)});
}

// ---- permutations with inverse-permutation VJPs -------------------------------------------

Var permute_via_gather(const Var& val, const Tensor& permutation, const Tensor& inverse_permutation,
                       long axis) {
  const std::string op = "permute_via_gather";
  require_defined(op, "val", val.defined());
  const std::size_t ax = core::normalize_axis(axis, val.ndim(), op);
  require_inverse_permutations(op, permutation, inverse_permutation, val.dim(axis));
  const long a = static_cast<long>(ax);
  // forward: permuted = take(val, permutation, axis)
  auto permute_impl = [permutation, a](const std::vector<Tensor>& in, std::vector<Tensor>&) {
    return std::vector<Tensor>{core::take(in[0], permutation, a)};
  };
  // backward: a gather by the inverse permutation (not take's scatter-add)
  auto permute_vjp = [inverse_permutation, a](const std::vector<Tensor>&,
                                              const std::vector<Tensor>& permuted_grad) {
    return std::vector<Tensor>{core::take(permuted_grad[0], inverse_permutation, a)};
  };
  return autodiff::custom_vjp(op, {val}, permute_impl, permute_vjp)[0];
}

namespace {

/// sort_key_val(keys, x, axis)[1]; keys either of x's shape, or 1-D along `axis`
/// (then the same stable order applied to every line as a gather).
Tensor sort_by_keys(const Tensor& keys, const Tensor& x, long axis) {
  if (keys.shape() == x.shape()) return core::sort_key_val(keys, x, axis).second;
  return core::take(x, core::argsort(keys, 0), axis);
}

void require_sort_keys(const std::string& op, const std::string& what, const Tensor& keys,
                       const Var& val, long axis) {
  require_defined(op, what, keys.defined());
  const bool same = keys.shape() == val.shape();
  const bool along_axis = keys.ndim() == 1 && keys.size() == val.dim(axis);
  if (!same && !along_axis) {
    throw ShapeError(op + ": " + what + " must have val's shape " + str(val.shape()) + " or be [" +
                     std::to_string(val.dim(axis)) + "] along the axis, got " + str(keys.shape()));
  }
}

}  // namespace

Var permute_via_sort(const Var& val, const Tensor& keys, const Tensor& inverse_keys, long axis) {
  const std::string op = "permute_via_sort";
  require_defined(op, "val", val.defined());
  const long a = static_cast<long>(core::normalize_axis(axis, val.ndim(), op));
  require_sort_keys(op, "keys", keys, val, a);
  require_sort_keys(op, "inverse_keys", inverse_keys, val, a);
  // forward: permuted = sort_key_val(keys, val, axis)[1]
  auto permute_impl = [keys, a](const std::vector<Tensor>& in, std::vector<Tensor>&) {
    return std::vector<Tensor>{sort_by_keys(keys, in[0], a)};
  };
  // backward: the gradient sorted by inverse_keys, which undoes the forward sort
  auto permute_vjp = [inverse_keys, a](const std::vector<Tensor>&,
                                       const std::vector<Tensor>& permuted_grad) {
    return std::vector<Tensor>{sort_by_keys(inverse_keys, permuted_grad[0], a)};
  };
  return autodiff::custom_vjp(op, {val}, permute_impl, permute_vjp)[0];
}

// ---- hashing ---------------------------------------------------------------------------

Tensor hash_rotations(Key rng, long d, const std::vector<long>& n_buckets, long n_hashes) {
  const std::string op = "hash_rotations";
  const auto [rot_size, total] = bucket_sizes(op, n_buckets);
  (void)total;
  if (d <= 0 || n_hashes <= 0) {
    throw ValueError(op + ": d and n_hashes must be positive, got " + std::to_string(d) + " and " +
                     std::to_string(n_hashes));
  }
  // random_rotations ~ N(0, 1): [d, n_hashes, rot_size / 2], a fresh matrix per round
  const Shape rotations_shape{static_cast<std::size_t>(d), static_cast<std::size_t>(n_hashes),
                              static_cast<std::size_t>(rot_size / 2)};
  return core::normal(rng, rotations_shape, DType::f32);
}

Tensor hash_vectors_with(const Tensor& vecs, const Tensor& rotations,
                         const std::vector<long>& n_buckets_factors, long n_hashes,
                         const Tensor* mask) {
  const std::string op = "hash_vectors";
  require_floating(op, "vecs", vecs);
  require_rank(op, "vecs", vecs.shape(), 2, "[L, d]");
  auto [rot_size, n_buckets] = bucket_sizes(op, n_buckets_factors);
  if (n_hashes <= 0) throw ValueError(op + ": n_hashes must be positive");
  const std::size_t seqlen = vecs.dim(0), d = vecs.dim(1);
  const std::size_t half = static_cast<std::size_t>(rot_size / 2);
  const std::size_t hashes = static_cast<std::size_t>(n_hashes);
  require_floating(op, "rotations", rotations);
  if (rotations.shape() != Shape{d, hashes, half}) {
    throw ShapeError(op + ": rotations must be [d, n_hashes, rot_size / 2] = " +
                     str(Shape{d, hashes, half}) + ", got " + str(rotations.shape()));
  }
  if (mask != nullptr) {
    require_defined(op, "mask", mask->defined());
    if (mask->shape() != Shape{seqlen}) {
      throw ShapeError(op + ": mask must be [L] = " + str(Shape{seqlen}) + ", got " +
                       str(mask->shape()));
    }
  }
  if (static_cast<double>(n_hashes) * static_cast<double>(n_buckets + 1) >
      static_cast<double>(std::numeric_limits<std::int32_t>::max())) {
    throw ValueError(op + ": n_hashes * n_buckets overflows int32 bucket ids");
  }

  // (Trax: rng = stop_gradient(tie_in(vecs, rng)). Nothing flows through hashing
  // here: vecs is a Tensor and the rotations are given.)

  // rotated_vecs[h, t, b] = sum_f vecs[t, f] R[f, h, b]  (einsum 'tf,fhb->htb')
  const Tensor R = rotations.astype(vecs.dtype())
                       .reshape(Dims{static_cast<long>(d), static_cast<long>(hashes * half)});
  Tensor rotated_vecs = core::matmul(vecs, R);  // [L, n_hashes * rot_size/2]
  rotated_vecs = core::transpose(
      rotated_vecs.reshape(Dims{static_cast<long>(seqlen), n_hashes, static_cast<long>(half)}),
      {1, 0, 2});  // [n_hashes, L, rot_size/2]

  Tensor buckets;  // int32 [n_hashes, L]
  if (n_buckets_factors.size() == 1) {
    // bucket = argmax over [rotated, -rotated]: the nearest of rot_size directions
    Tensor both = core::concatenate({rotated_vecs, core::neg(rotated_vecs)}, -1);
    buckets = core::argmax(both, -1, DType::i32);
  } else {
    // Factorised: factor j hashes with its own f_j/2 columns; ids combine as
    // mixed radix, b_0 + f_0 b_1 + f_0 f_1 b_2 + ... (first factor least significant).
    long cur_sum = 0, cur_product = 1;
    for (long factor : n_buckets_factors) {
      Tensor rv = core::slice(rotated_vecs, -1, cur_sum, cur_sum + factor / 2);
      cur_sum += factor / 2;
      rv = core::concatenate({rv, core::neg(rv)}, -1);
      Tensor b = core::argmax(rv, -1, DType::i32);
      buckets = buckets.defined()
                    ? core::add(buckets, core::mul(b, static_cast<double>(cur_product)))
                    : b;
      cur_product *= factor;
    }
  }

  if (mask != nullptr) {
    // Padding gets a bucket of its own (one more per round): id n_buckets.
    n_buckets += 1;
    Tensor valid = mask->reshape(Dims{1, static_cast<long>(seqlen)});
    buckets =
        core::where(valid, buckets, Tensor::scalar(static_cast<double>(n_buckets - 1), DType::i32));
  }

  // offsets: round h's ids are shifted by h * n_buckets so rounds never share a bucket
  // (Trax: offsets = tie_in(buckets, arange(n_hashes)); integer constants here.)
  Tensor offsets = Tensor::arange(hashes, DType::i32);
  offsets = core::mul(offsets, static_cast<double>(n_buckets)).reshape(Dims{-1, 1});
  // [n_hashes, L] -> [n_hashes * L], index h * L + t
  buckets = core::add(buckets, offsets).reshape(Dims{-1});
  return buckets;
}

Tensor hash_vectors(const Tensor& vecs, Key rng, const std::vector<long>& n_buckets, long n_hashes,
                    const Tensor* mask) {
  require_floating("hash_vectors", "vecs", vecs);
  require_rank("hash_vectors", "vecs", vecs.shape(), 2, "[L, d]");
  // random_rotations from rng, then the hash with them
  Tensor random_rotations =
      hash_rotations(rng, static_cast<long>(vecs.dim(1)), n_buckets, n_hashes);
  return hash_vectors_with(vecs, random_rotations, n_buckets, n_hashes, mask);
}

// ---- the sort step -------------------------------------------------------------------

SortedBuckets sort_buckets(const Tensor& buckets, long seqlen, long n_hashes) {
  const std::string op = "sort_buckets";
  require_integer(op, "buckets", buckets);
  if (seqlen <= 0 || n_hashes <= 0) {
    throw ValueError(op + ": seqlen and n_hashes must be positive, got " + std::to_string(seqlen) +
                     " and " + std::to_string(n_hashes));
  }
  const std::size_t n = static_cast<std::size_t>(seqlen * n_hashes);
  if (buckets.shape() != Shape{n}) {
    throw ShapeError(op + ": buckets must be [n_hashes * seqlen] = " + str(Shape{n}) + ", got " +
                     str(buckets.shape()));
  }
  SortedBuckets s;
  // ticker = arange(n_hashes * seqlen)  (Trax: tie_in(x, arange(...)))
  s.ticker = Tensor::arange(n, DType::i32);

  // buckets_and_t = seqlen * buckets + ticker % seqlen: distinct keys, ordered by
  // bucket, then by position within the bucket. (Trax: stop_gradient; int keys here.)
  const std::vector<std::int64_t> b = index_values(buckets);
  std::vector<std::int32_t> bt(n);
  for (std::size_t t = 0; t < n; ++t) {
    if (b[t] < 0) throw ValueError(op + ": bucket ids must be >= 0, got " + std::to_string(b[t]));
    const std::int64_t key = seqlen * b[t] + static_cast<std::int64_t>(t) % seqlen;
    if (key > std::numeric_limits<std::int32_t>::max()) {
      throw ValueError(op + ": seqlen * bucket + position overflows int32 at index " +
                       std::to_string(t) + " (as in Trax, the sort keys are int32)");
    }
    bt[t] = static_cast<std::int32_t>(key);
  }
  s.buckets_and_t = Tensor::from<std::int32_t>(Shape{n}, bt);

  // Hash-based sort ("s" = sorted): sticker[i] is the ticker of the i-th smallest key.
  std::tie(s.sbuckets_and_t, s.sticker) = core::sort_key_val(s.buckets_and_t, s.ticker, -1);
  // undo_sort: the inverse permutation of sticker (sort ticker by sticker).
  s.undo_sort = core::sort_key_val(s.sticker, s.ticker, -1).second;
  return s;
}

}  // namespace minitrax::layers::research
