# minitrax/tools/gdb/minitrax_printers.py: gdb pretty-printers for minitrax.
#
# What they print (see docs/debugging.md, "Pretty-printers", for real output):
#
#   core::Tensor        Tensor(float32, shape=[16, 8], [[0, 0.01, 0.02, ..., 0.05, 0.06, 0.07], ...])
#                       the same text as Tensor::str(): dtype, shape, values, the first
#                       and last `minitrax-edge-items` (3) of each axis around "...".
#   autodiff::Var       Var(%3 = matmul, tape #2) Tensor(...)   or   Var(constant) Tensor(...)
#   autodiff::Node      matmul(%0 [16, 8], const[8, 4]) -> [16, 4] float32  saved 2  [scope]
#   autodiff::Edge      %3   (%3.1 for output 1, "(no grad)" when it does not flow)
#   base::Layer         LSHSelfAttention(n_in=1, n_out=1, weights [1, 8, 4], ...), and
#                       any subclass (found through the dynamic type), with the subclass's
#                       own members and the sublayers as children.
#   core::Key           Key(0, 42)
#   core::Tree<T>       its leaves, nested as lists.
#
# The printers only read memory (they never call functions in the program), so they
# also work on core files. Whatever they read may be garbage (uninitialised locals,
# values optimised out): every printer catches gdb errors and prints "<optimized out>"
# or "<unreadable Tensor: why>" instead, and every count read from memory is checked
# and capped before it is used, so a garbage size never makes gdb read gigabytes.
#
# How they load:
#   * automatically: the minitrax library embeds this file in a `.debug_gdb_scripts`
#     section (core/gdb_printers.cpp), so gdb runs it for every program linked with
#     minitrax, provided auto-load allows the program's directory:
#         gdb -iex 'add-auto-load-safe-path /path/to/minitrax/build' ./build/debug/...
#     (or the same `add-auto-load-safe-path` line in ~/.gdbinit).
#   * by hand:  (gdb) source /path/to/minitrax/tools/gdb/minitrax_printers.py
#
# Loading it twice is harmless (the printers are replaced, not duplicated).
# `info pretty-printer` lists them; `disable pretty-printer global minitrax;Tensor`
# turns one off; `print/r x` prints one value raw.

import math
import struct

import gdb
import gdb.printing

# Limits on what is read from the inferior.
_MAX_NDIM = 32              # a Tensor with more axes than this is garbage
_MAX_ELEMENTS = 1 << 42     # ... or more elements than this
_MAX_PRINTED = 2000         # values printed for one Tensor, at most
_MAX_STRING = 512           # characters read from a std::string
_MAX_LIST = 10000           # elements of a std::vector that are looked at
_MAX_TREE_LEAVES = 64       # weight shapes listed for one layer

# Tensor's DType (core/tensor.hpp): value -> (numpy name, struct format, size, digits)
_DTYPES = {
    0: ("float32", "f", 4, 6),
    1: ("float64", "d", 8, 10),
    2: ("int32", "i", 4, None),
    3: ("int64", "q", 8, None),
}


class _EdgeItemsParameter(gdb.Parameter):
    """How many values the minitrax Tensor printer shows at each end of an axis."""

    set_doc = "Set how many values minitrax Tensors show at each end of an axis."
    show_doc = "Show how many values minitrax Tensors show at each end of an axis."

    def __init__(self):
        super().__init__("minitrax-edge-items", gdb.COMMAND_DATA, gdb.PARAM_ZUINTEGER)
        self.value = 3

    def get_show_string(self, svalue):
        return "minitrax Tensors show %s values at each end of an axis" % svalue


try:
    _edge_items_param  # noqa: B018  (defined by an earlier load: keep its value)
except NameError:
    _edge_items_param = _EdgeItemsParameter()


def _edge_items():
    try:
        return int(_edge_items_param.value)
    except Exception:  # noqa: BLE001
        return 3


class _Unreadable(Exception):
    """The value cannot be printed: garbage sizes, unreadable memory, ..."""


def _is_optimized_out(val):
    try:
        return val.is_optimized_out
    except Exception:  # noqa: BLE001
        return False


def _vector(val, cap=_MAX_LIST):
    """The elements of a std::vector (libstdc++), as gdb.Values; checked against cap."""
    impl = val["_M_impl"]
    start, finish = impl["_M_start"], impl["_M_finish"]
    if int(start) == 0 and int(finish) == 0:
        return []
    n = int(finish - start)
    if n < 0 or n > cap:
        raise _Unreadable("a std::vector of %d elements" % n)
    return [start[i] for i in range(n)]


def _vector_len(val):
    impl = val["_M_impl"]
    n = int(impl["_M_finish"] - impl["_M_start"])
    if n < 0 or n > _MAX_ELEMENTS:
        raise _Unreadable("a std::vector of %d elements" % n)
    return n


def _string(val):
    """A std::string (libstdc++'s new ABI) as a Python str, at most _MAX_STRING chars."""
    n = int(val["_M_string_length"])
    if n < 0 or n > (1 << 32):
        raise _Unreadable("a std::string of %d characters" % n)
    ptr = val["_M_dataplus"]["_M_p"]
    data = bytes(gdb.selected_inferior().read_memory(int(ptr), min(n, _MAX_STRING)))
    s = data.decode("utf-8", errors="replace")
    return s + ("..." if n > _MAX_STRING else "")


def _shape_str(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _shape(val):
    """A Shape (std::vector<std::size_t>) as a list of ints, checked."""
    dims = [int(d) for d in _vector(val, _MAX_NDIM)]
    total = 1
    for d in dims:
        if d < 0 or d > _MAX_ELEMENTS:
            raise _Unreadable("an extent of %d" % d)
        total *= d
        if total > _MAX_ELEMENTS:
            raise _Unreadable("shape %s" % _shape_str(dims))
    return dims


def _format_value(v, digits):
    """As core/tensor.cpp prints one element: setprecision(6 or 10) for floats (%g)."""
    if digits is None:
        return str(v)
    if math.isnan(v):
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    return "%.*g" % (digits, v)


def _dtype_info(val):
    code = int(val["dtype_"])
    if code not in _DTYPES:
        raise _Unreadable("dtype code %d" % code)
    return _DTYPES[code]


def _tensor_header(val):
    """(defined, dtype name, shape, size) of a Tensor, validated."""
    if int(val["buffer_"]["_M_ptr"]) == 0:
        return False, None, None, 0
    name = _dtype_info(val)[0]
    shape = _shape(val["shape_"])
    size = int(val["size_"])
    expected = 1
    for d in shape:
        expected *= d
    if size != expected:
        raise _Unreadable("size %d does not match shape %s" % (size, _shape_str(shape)))
    return True, name, shape, size


def _tensor_str(val, edge=None):
    """The text Tensor::str() would give, read from memory."""
    if edge is None:
        edge = _edge_items()
    defined, name, shape, size = _tensor_header(val)
    if not defined:
        return "Tensor(undefined)"
    _, fmt, isz, digits = _dtype_info(val)
    ptr = int(val["ptr_"])
    if size > 0 and ptr == 0:
        raise _Unreadable("%s %s with a null data pointer" % (name, _shape_str(shape)))
    inferior = gdb.selected_inferior()
    budget = [_MAX_PRINTED]

    def read(first, count):
        if count <= 0:
            return []
        count = min(count, budget[0])
        if count <= 0:
            return None
        budget[0] -= count
        try:
            data = bytes(inferior.read_memory(ptr + first * isz, count * isz))
        except gdb.MemoryError:
            raise _Unreadable("%s %s, data at 0x%x cannot be read" % (name, _shape_str(shape), ptr))
        return [_format_value(v, digits) for v in struct.unpack("<%d%s" % (count, fmt), data)]

    def rec(offset, axis, indent):
        n = shape[axis]
        stride = 1
        for d in shape[axis + 1:]:
            stride *= d
        last = axis + 1 == len(shape)
        sep = ", " if last else ",\n" + " " * (indent + 1)
        elide = n > 2 * edge
        idx = list(range(edge)) + [None] + list(range(n - edge, n)) if elide else list(range(n))
        parts = []
        if last:
            runs = [(0, edge), (n - edge, edge)] if elide else [(0, n)]
            values = []
            for i, (first, count) in enumerate(runs):
                got = read(offset + first, count)
                if got is None:
                    values.append("...")
                    break
                if i == 1:
                    values.append("...")
                values.extend(got)
            return "[" + ", ".join(values) + "]"
        for i in idx:
            if i is None:
                parts.append("...")
                continue
            if budget[0] <= 0:
                parts.append("...")
                break
            parts.append(rec(offset + i * stride, axis + 1, indent + 1))
        return "[" + sep.join(parts) + "]"

    head = "Tensor(%s, shape=%s, " % (name, _shape_str(shape))
    if not shape:
        body = read(0, 1)[0]
    elif size == 0:
        body = "[]"
    else:
        body = rec(0, 0, 7)
    return head + body + ")"


def _safe(kind, fn):
    """Runs fn(); any failure becomes a short message instead of an exception."""
    try:
        return fn()
    except _Unreadable as e:
        return "<unreadable %s: %s>" % (kind, e)
    except gdb.MemoryError:
        return "<unreadable %s>" % kind
    except gdb.error as e:
        msg = str(e)
        if "optimized out" in msg:
            return "<optimized out>"
        return "<unreadable %s: %s>" % (kind, msg)
    except Exception as e:  # noqa: BLE001  (a printer must never raise)
        return "<unreadable %s: %s: %s>" % (kind, type(e).__name__, e)


# ---- printers ---------------------------------------------------------------------


class TensorPrinter:
    """minitrax::core::Tensor: dtype, shape and values, as Tensor::str()."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        return _safe("Tensor", lambda: _tensor_str(self.val))


def _tape_stack():
    """The TapeCore pointers of the selected thread's tape stack (tape.cpp's t_stack)."""
    try:
        stack = gdb.parse_and_eval("'minitrax::autodiff::(anonymous namespace)::t_stack'")
        return [p for p in _vector(stack, 1024) if int(p) != 0]
    except Exception:  # noqa: BLE001  (no process, no TLS support, no symbol, ...)
        return []


def _next_tape_serial():
    """The serial number the next tape will get (tape.cpp's g_next_serial), or None."""
    try:
        v = gdb.parse_and_eval("'minitrax::autodiff::(anonymous namespace)::g_next_serial'")
        return int(v["_M_i"])
    except Exception:  # noqa: BLE001
        return None


def _node_of(serial, node_id):
    """The Node a Var refers to, if its tape is on this thread's tape stack."""
    for tape in _tape_stack():
        core = tape.dereference()
        if int(core["serial_"]) != serial:
            continue
        nodes = core["nodes_"]
        if node_id < 0 or node_id >= _vector_len(nodes):
            return None
        return nodes["_M_impl"]["_M_start"][node_id]
    return None


class VarPrinter:
    """minitrax::autodiff::Var: its node on the tape (if any) and its value."""

    def __init__(self, val):
        self.val = val

    def _node(self):
        serial = int(self.val["tape_serial_"])
        if serial == 0:
            return "Var(constant)"
        node_id = int(self.val["node_"])
        out = int(self.val["output_"])
        ref = "%%%d" % node_id + (".%d" % out if out else "")
        next_serial = _next_tape_serial()
        if node_id < 0 or out < 0 or out > 65535 or (next_serial and serial >= next_serial):
            raise _Unreadable("node %s on tape #%d, which does not exist" % (ref, serial))
        try:
            node = _node_of(serial, node_id)
            op = _string(node["op"]) if node is not None else None
        except Exception:  # noqa: BLE001
            op = None
        if op is None:
            return "Var(%s, tape #%d)" % (ref, serial)
        return "Var(%s = %s, tape #%d)" % (ref, op, serial)

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        head = _safe("Var", self._node)
        if head.startswith("<"):
            return head
        return head + " " + _safe("Tensor", lambda: _tensor_str(self.val["value_"]))


def _edge_str(edge, shape=None):
    node = int(edge["node"])
    if node < 0:
        return "const" + (_shape_str(shape) if shape is not None else "")
    s = "%%%d" % node
    if int(edge["output"]):
        s += ".%d" % int(edge["output"])
    if shape is not None:
        s += " " + _shape_str(shape)
    if not bool(edge["flows"]):
        s += " (no grad)"
    return s


class EdgePrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        return _safe("Edge", lambda: _edge_str(self.val))


class NodePrinter:
    """minitrax::autodiff::Node: op(inputs with shapes) -> output shapes, saved, scope."""

    def __init__(self, val):
        self.val = val

    def _str(self):
        v = self.val
        op = _string(v["op"])
        edges = _vector(v["inputs"], 4096)
        in_shapes = [_shape(s) for s in _vector(v["input_shapes"], 4096)]
        ins = []
        for k, e in enumerate(edges):
            ins.append(_edge_str(e, in_shapes[k] if k < len(in_shapes) else None))
        outs = [_shape_str(_shape(s)) for s in _vector(v["output_shapes"], 4096)]
        s = "%s(%s) -> %s" % (op, ", ".join(ins), ", ".join(outs))
        dts = _vector(v["output_dtypes"], 4096)
        if dts:
            code = int(dts[0])
            s += " " + (_DTYPES[code][0] if code in _DTYPES else "dtype?%d" % code)
        n_saved = _vector_len(v["saved"])
        if n_saved:
            s += "  saved %d" % n_saved
        scope = int(v["scope"]["_M_ptr"])
        if scope:
            s += "  [%s]" % _string(v["scope"]["_M_ptr"].dereference())
        return s

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        return _safe("Node", self._str)


class KeyPrinter:
    """minitrax::core::Key: its two 32-bit words, as to_string(key)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        return _safe("Key", lambda: "Key(%d, %d)" % (int(self.val["hi"]), int(self.val["lo"])))


def _tree_parts(val):
    """(is_leaf, leaf value or list of child Tree values) of a core::Tree<T>."""
    var = val["node_"]
    vtype = var.type.strip_typedefs()
    index = int(var["_M_index"])
    addr = var.address
    if addr is None:
        raise _Unreadable("a Tree not in memory")
    if index == 0:
        return True, addr.cast(vtype.template_argument(0).pointer()).dereference()
    if index == 1:
        children = addr.cast(vtype.template_argument(1).pointer()).dereference()
        return False, _vector(children)
    raise _Unreadable("a Tree with variant index %d" % index)


def _tree_leaves(val, out, cap):
    leaf, x = _tree_parts(val)
    if leaf:
        out.append(x)
    else:
        for c in x:
            if len(out) >= cap:
                return
            _tree_leaves(c, out, cap)


class TreePrinter:
    """minitrax::core::Tree<T>: a leaf prints as the leaf; a list as "Tree of n" with
    its subtrees as children."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        parts = []
        error = _safe("Tree", lambda: parts.append(_tree_parts(self.val)) or "")
        if not parts:
            return error
        leaf, x = parts[0]
        if leaf:
            return x  # gdb prints the leaf with its own printer
        return "Tree of %d" % len(x)

    def children(self):
        try:
            leaf, x = _tree_parts(self.val)
        except Exception:  # noqa: BLE001
            return
        if not leaf:
            for i, c in enumerate(x):
                yield "[%d]" % i, c


_LAYER = "minitrax::base::Layer"
_derives_cache = {}


def _derives_from_layer(t):
    """True if the class type t is base::Layer or derives from it."""
    t = t.strip_typedefs()
    if t.code != gdb.TYPE_CODE_STRUCT:
        return False
    name = t.tag or t.name
    if name in _derives_cache:
        return _derives_cache[name]
    result = name == _LAYER
    if not result:
        try:
            for f in t.fields():
                if f.is_base_class and _derives_from_layer(f.type):
                    result = True
                    break
        except Exception:  # noqa: BLE001
            result = False
    if name:
        _derives_cache[name] = result
    return result


def _type_name(t):
    try:
        t = t.strip_typedefs()
        return t.tag or t.name or ""
    except Exception:  # noqa: BLE001
        return ""


def _layer_fields_above(t):
    """(name, base?) of the data members declared by t and its bases below Layer."""
    out = []
    t = t.strip_typedefs()
    if (t.tag or t.name) == _LAYER:
        return out
    for f in t.fields():
        if f.is_base_class:
            if _derives_from_layer(f.type):
                out.extend(_layer_fields_above(f.type))
        elif f.artificial or not f.name or f.name.startswith("_vptr"):
            continue
        elif _type_name(f.type).startswith("std::function<"):
            continue  # callables print as pages of template names and say nothing
        else:
            out.append(f.name)
    return out


class LayerPrinter:
    """minitrax::base::Layer and subclasses: name, arity, weight shapes; children are
    the subclass's own members and the sublayers."""

    def __init__(self, val):
        self.val = val
        self.dyn = val
        try:
            dt = val.dynamic_type
            if dt is not None and dt.strip_typedefs() != val.type.strip_typedefs():
                self.dyn = val.cast(dt)
        except Exception:  # noqa: BLE001
            pass

    def _base(self):
        return self.dyn.cast(gdb.lookup_type(_LAYER))

    def _class_name(self):
        t = self.dyn.type.strip_typedefs()
        name = t.tag or t.name or "?"
        return name.split("<")[0].split("::")[-1]

    def _str(self):
        base = self._base()
        name = _string(base["name_"])
        n_in, n_out = int(base["n_in_"]), int(base["n_out_"])
        s = "%s(n_in=%d, n_out=%d" % (name, n_in, n_out)
        leaves = []
        try:
            _tree_leaves(base["weights_"], leaves, _MAX_TREE_LEAVES + 1)
        except Exception:  # noqa: BLE001
            leaves = None
        if leaves is None:
            s += ", weights <unreadable>"
        elif leaves:
            shapes = []
            for w in leaves[:_MAX_TREE_LEAVES]:
                t = w["value_"]
                shapes.append(
                    _safe("Tensor", lambda t=t: _shape_str(_tensor_header(t)[2] or [])
                          if int(t["buffer_"]["_M_ptr"]) else "undefined"))
            s += ", weights " + ", ".join(shapes)
            if len(leaves) > _MAX_TREE_LEAVES:
                s += ", ..."
        n_sub = len(_vector(base["sublayers_"]))
        if n_sub:
            s += ", %d sublayer%s" % (n_sub, "" if n_sub == 1 else "s")
        if not bool(base["initialized_"]):
            s += ", not initialized"
        s += ")"
        cls = self._class_name()
        if cls not in ("Layer", name):
            s = cls + " " + s
        return s

    def to_string(self):
        if _is_optimized_out(self.val):
            return "<optimized out>"
        return _safe("Layer", self._str)

    def children(self):
        try:
            fields = _layer_fields_above(self.dyn.type)
        except Exception:  # noqa: BLE001
            fields = []
        for f in fields:
            try:
                yield f, self.dyn[f]
            except Exception:  # noqa: BLE001
                continue
        try:
            subs = _vector(self._base()["sublayers_"])
        except Exception:  # noqa: BLE001
            subs = []
        for i, p in enumerate(subs):
            try:
                ptr = p["_M_ptr"]
                if int(ptr) == 0:
                    continue
                yield "sublayers[%d]" % i, ptr.dereference()
            except Exception:  # noqa: BLE001
                continue


# ---- registration ---------------------------------------------------------------------


class _SubPrinter(gdb.printing.SubPrettyPrinter):
    def __init__(self, name, match, factory):
        super().__init__(name)
        self.match = match
        self.factory = factory


def _exact(name):
    return lambda t: (t.tag or t.name) == name


def _template(prefix):
    return lambda t: (t.tag or t.name or "").startswith(prefix + "<")


class MinitraxPrettyPrinter(gdb.printing.PrettyPrinter):
    def __init__(self):
        super().__init__("minitrax", [
            _SubPrinter("Tensor", _exact("minitrax::core::Tensor"), TensorPrinter),
            _SubPrinter("Var", _exact("minitrax::autodiff::Var"), VarPrinter),
            _SubPrinter("Node", _exact("minitrax::autodiff::Node"), NodePrinter),
            _SubPrinter("Edge", _exact("minitrax::autodiff::Edge"), EdgePrinter),
            _SubPrinter("Key", _exact("minitrax::core::Key"), KeyPrinter),
            _SubPrinter("Tree", _template("minitrax::core::Tree"), TreePrinter),
            _SubPrinter("Layer", _derives_from_layer, LayerPrinter),
        ])

    def __call__(self, val):
        try:
            t = val.type
            if t.code == gdb.TYPE_CODE_REF or t.code == gdb.TYPE_CODE_RVALUE_REF:
                return None  # gdb calls us again with the referenced value
            t = t.strip_typedefs().unqualified()
            if t.code != gdb.TYPE_CODE_STRUCT:
                return None
            ours = "minitrax::" in (t.tag or t.name or "")
        except Exception:  # noqa: BLE001
            return None
        for sub in self.subprinters:
            if not sub.enabled:
                continue
            if not ours and sub.name != "Layer":  # a user's class may derive from Layer
                continue
            try:
                if sub.match(t):
                    return sub.factory(val)
            except Exception:  # noqa: BLE001
                continue
        return None


def register(objfile=None):
    """Registers the printers with objfile (auto-load) or globally (manual source)."""
    gdb.printing.register_pretty_printer(objfile, MinitraxPrettyPrinter(), replace=True)


register(gdb.current_objfile())
