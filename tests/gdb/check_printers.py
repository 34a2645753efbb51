# minitrax/tests/gdb/check_printers.py: the ctest `gdb_pretty_printers`, run by gdb.
#
#   gdb -nx -batch -iex 'add-auto-load-safe-path BUILD_DIR' -x check_printers.py \
#       --args BUILD_DIR/tests/gdb_target OUT_FILE
#
# It checks that the printers were auto-loaded from the program's .debug_gdb_scripts
# section (nothing sources them here), breaks in LSHSelfAttentionLayer::forward_unbatched,
# prints the input Var, the layer, a weight, a Key and a tape node through them, steps out
# of forward_unbatched to print its output, lets the program finish, and compares:
#   * x with numbers known by hand: x[0, i, j] = (8 i + j) / 100 (see gdb_target.cpp);
#   * the weight and the output with what the program itself printed with
#     Tensor::str() into OUT_FILE (an independent path: C++ formatting of the
#     program's own tensors, against Python reading raw memory);
#   * shapes, the layer's arity and weight shapes, the node's op and shapes.
# Exit status: 0 pass, 1 fail (each failure printed as "FAIL: ..."), 77 skip (gdb
# cannot run programs here, e.g. ptrace is not permitted).
import re
import sys
import traceback

import gdb

failures = []


def check(cond, what, got=""):
    if cond:
        print("ok: " + what)
    else:
        failures.append(what)
        print("FAIL: %s\n----- got:\n%s\n-----" % (what, got))


def run(cmd):
    out = gdb.execute(cmd, to_string=True)
    print("(gdb) %s\n%s" % (cmd, out.rstrip("\n")))
    return out


def quit_with(code):
    sys.stdout.flush()
    try:
        gdb.execute("kill", to_string=True)
    except gdb.error:
        pass
    gdb.execute("quit %d" % code)


def numbers(text):
    """The numbers of a printed tensor, in order ("..." dropped)."""
    body = text.split("shape=", 1)[1]
    body = body.split("]", 1)[1]  # past the shape's closing bracket
    return re.findall(r"-?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)", body)


def tensor_text(text):
    """From the first 'Tensor(' to its closing parenthesis."""
    start = text.index("Tensor(")
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    raise ValueError("no complete Tensor(...) in " + text)


def main():
    gdb.execute("set pagination off")
    gdb.execute("set width 0")
    gdb.execute("set confirm off")
    # The program's argument (gdb.parameter("args") is empty in gdb 13): its output file.
    out_file = re.search(r'"(.*)"', gdb.execute("show args", to_string=True)).group(1).split()[-1]

    # 1. The printers came with the program.
    scripts = run("info auto-load python-scripts")
    check(re.search(r"Yes\s+gdb\.inlined-script\.minitrax", scripts) is not None,
          "the printers are auto-loaded from .debug_gdb_scripts", scripts)

    # 2. Break in the reference path's per-(example, head) function.
    run("break minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched")
    try:
        run("run")
    except gdb.error as e:
        print("SKIP: gdb cannot run the program here (%s)" % e)
        return 77
    try:
        frame = gdb.selected_frame().name() or ""
    except gdb.error:
        frame = ""
    if "forward_unbatched" not in frame:
        print("FAIL: the program did not stop in forward_unbatched")
        return 1

    # 3. The input: a Var on the tape, [16, 8], values known by hand.
    px = run("print x")
    check("Var(%" in px and "tape #" in px, "x prints as a Var with its tape node", px)
    tx = tensor_text(px)
    check(tx.startswith("Tensor(float32, shape=[16, 8], [[0, 0.01, 0.02, ..., 0.05, 0.06, 0.07],\n"),
          "x: dtype, shape and first row (0, 0.01, 0.02, ..., 0.07)", tx)
    check(tx.endswith("[1.2, 1.21, 1.22, ..., 1.25, 1.26, 1.27]])"),
          "x: last row (1.2, 1.21, 1.22, ..., 1.27)", tx)
    check(tx.count("\n") == 6, "x: 3 + 3 rows around '...' (16 rows elided)", tx)

    # 4. The layer (*this is an LSHSelfAttentionLayer): name, arity, weight shapes.
    player = run("print *this")
    check("LSHSelfAttention(n_in=1, n_out=1, weights [1, 8, 4], [1, 8, 4], [1, 4, 8])" in player,
          "the layer prints its name, n_in/n_out and weight shapes", player)
    check("lsh_ = " in player and "n_hashes = 2" in player,
          "the layer's own members are its children", player)
    pbase = run("print *(minitrax::base::Layer*)this")
    check("LSHSelfAttention(n_in=1, n_out=1, weights [1, 8, 4]" in pbase,
          "a Layer seen through a base pointer prints through its dynamic type", pbase)

    # 5. A weight (one head's w_q), a Key, and a node of the tape.
    pw = run("print weights[0]")
    tw = tensor_text(pw)
    check(tw.startswith("Tensor(float32, shape=[8, 4], "), "w_q of head 0 is [8, 4] float32", tw)
    pkey = run("print rng")
    check(re.search(r"= Key\(\d+, \d+\)", pkey) is not None, "a Key prints its two words", pkey)
    pnode = run("print 'minitrax::autodiff::(anonymous namespace)::t_stack'[0]->nodes_[0]")
    check("input() -> [1, 16, 8] float32" in pnode, "tape node 0 is the input [1, 16, 8]", pnode)
    x_op = re.search(r"Var\(%\d+ = (\w+), tape #", px)
    pnode = run("print 'minitrax::autodiff::(anonymous namespace)::t_stack'[0]->nodes_[%d]"
                % int(gdb.parse_and_eval("x.node_")))
    check(x_op is not None and re.search(r"= %s\(%%\d+ \[1, 16, 8\]\) -> \[16, 8\] float32"
                                         % x_op.group(1), pnode) is not None,
          "x's node: the op its Var names, from [1, 16, 8] to [16, 8]", pnode)

    # 6. Garbage never breaks a printer: x's float data seen as a Tensor, a null Tensor.
    pg = run("print *(minitrax::core::Tensor*)x.value_.ptr_")
    check("<unreadable Tensor" in pg and "Python Exception" not in pg,
          "a Tensor made of garbage prints <unreadable Tensor...>", pg)
    try:
        pn = run("print *(minitrax::core::Tensor*)0")
    except gdb.error as e:
        pn = "gdb.error: %s" % e
    check("Python Exception" not in pn and ("<unreadable Tensor" in pn or "Cannot access" in pn),
          "a Tensor at address 0 prints <unreadable Tensor> (or gdb's own error)", pn)

    # 7. Step out: forward_unbatched's output, then let the program finish.
    run("finish")  # gdb prints "Value returned is $N = {out = Var(...) Tensor(...), ...}"
    pfin = run("print $")
    check("forward_unbatched" not in gdb.selected_frame().name() and "out = Var(%" in pfin,
          "the returned UnbatchedResult shows out as a Var with its node", pfin)
    tout = tensor_text(pfin.split("out = ", 1)[1])
    check(tout.startswith("Tensor(float32, shape=[16, 8], "), "out is [16, 8] float32", tout)
    gdb.execute("delete")
    run("continue")

    # 8. Against what the program printed itself (Tensor::str()).
    try:
        with open(out_file) as f:
            printed = f.read()
    except OSError as e:
        printed = ""
        check(False, "the program wrote %s" % out_file, str(e))
    blocks = dict(re.findall(r"^(\w+): (Tensor\(.*?\))$", printed, re.S | re.M))
    if printed:
        want_x = numbers(blocks.get("x", "shape=[] "))
        check(len(want_x) == 36 and numbers(tx) == want_x,
              "x: the values gdb printed equal the program's Tensor::str()", printed)
        want_w = numbers(blocks.get("w_q", "shape=[] "))
        got_w = numbers(tw)
        check(len(got_w) == 24 and got_w == want_w,
              "w_q: the values gdb printed equal the program's Tensor::str() (%d values)" % len(got_w),
              "gdb: %s\nprogram: %s" % (got_w, want_w))
        want_y = numbers(blocks.get("y", "shape=[] "))
        got_y = numbers(tout)
        check(len(got_y) == 36 and got_y == want_y,
              "out: the values gdb printed equal the program's y (%d values)" % len(got_y),
              "gdb: %s\nprogram: %s" % (got_y, want_y))
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


try:
    code = main()
except Exception:  # noqa: BLE001  (a bug here is a failure, not a pass)
    traceback.print_exc()
    code = 1
quit_with(code)
