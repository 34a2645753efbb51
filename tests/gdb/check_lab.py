# minitrax/tests/gdb/check_lab.py: the ctest `gdb_reformer_lab`, run by gdb.
#
#   gdb -nx -batch -iex 'add-auto-load-safe-path BUILD_DIR' -x check_lab.py \
#       --args BUILD_DIR/examples/reformer_lab --step 7
#
# The walkthrough of docs/debugging.md, checked: gdb runs the course lab's step 7
# (examples/reformer_lab.cpp, OurLSHSelfAttention: 3 heads, n_hashes 5, n_buckets 4,
# chunk_len 8, on the lab's x = uniform(PRNGKey(0), (1, 8, 5))), breaks in
# LSHSelfAttentionLayer::forward_unbatched, prints through the auto-loaded printers the
# input x, the layer (*this), a weight and the buckets, steps out of each head's call and
# compares with numbers from elsewhere:
#   * x with JAX's uniform(PRNGKey(0), (1, 8, 5)), computed here in Python (Threefry-2x32
#     as JAX lays it out; the Python is first checked against jax.random.split's
#     documented values), not by the program;
#   * head 0's buckets with the line the program prints itself (numpy-style, C++);
#   * the sum of the three heads' outputs (rows 0 and 7) with the notebook's expected
#     output of step 7 (../shared/reference, section 3.1) and with the program's own
#     printout of the layer's output.
# Exit status: 0 pass, 1 fail (each failure printed as "FAIL: ..."), 77 skip (gdb
# cannot run programs here, e.g. ptrace is not permitted).
import os
import re
import struct
import sys
import tempfile
import traceback

import gdb

failures = []

# The notebook's expected output of step 7, rows 0 and 7 ("Expected Output" block).
LAB_ROW0 = [0.66842824, -0.11364323, -0.5443061, 0.21126242, -0.010988623]
LAB_ROW7 = [0.72203505, -0.1019966, -0.55215168, 0.17872262, -0.022289157]

FORWARD_UNBATCHED = "minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched"


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


# ---- JAX's uniform, independently of the program ----------------------------------------

M32 = 0xFFFFFFFF


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 (20 rounds), as jax.random's threefry_2x32 computes one pair."""
    rotl = lambda v, r: ((v << r) | (v >> (32 - r))) & M32  # noqa: E731
    ks = [k0, k1, k0 ^ k1 ^ 0x1BD11BDA]
    rotations = [[13, 15, 26, 6], [17, 29, 16, 24]]
    x0, x1 = (x0 + ks[0]) & M32, (x1 + ks[1]) & M32
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = (x0 + x1) & M32
            x1 = rotl(x1, r) ^ x0
        x0 = (x0 + ks[(i + 1) % 3]) & M32
        x1 = (x1 + ks[(i + 2) % 3] + i + 1) & M32
    return x0, x1


def random_bits(key, n):
    """JAX's threefry_2x32(key, iota(n)): the counts split in halves, outputs concatenated."""
    m = n + n % 2
    counts = list(range(n)) + [0] * (m - n)
    pairs = [threefry2x32(key[0], key[1], counts[i], counts[m // 2 + i]) for i in range(m // 2)]
    return ([a for a, _ in pairs] + [b for _, b in pairs])[:n]


def uniform(key, n):
    """jax.random.uniform(key, (n,)) in float32: 23 random mantissa bits, minus 1."""
    return [struct.unpack("<f", struct.pack("<I", (b >> 9) | 0x3F800000))[0] - 1.0
            for b in random_bits(key, n)]


def floats(strings):
    return [float(s) for s in strings]


def close(got, want, tol):
    return len(got) == len(want) and all(abs(g - w) <= tol for g, w in zip(got, want))


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


def frame_name():
    try:
        return gdb.selected_frame().name() or ""
    except gdb.error:
        return ""


def main():
    gdb.execute("set pagination off")
    gdb.execute("set width 0")
    gdb.execute("set confirm off")

    # 0. The Python Threefry reproduces jax.random.split(PRNGKey(0)) (JAX's documentation).
    check(random_bits((0, 0), 4) == [4146024105, 967050713, 2718843009, 1272950319],
          "the test's Threefry gives jax.random.split(PRNGKey(0))", random_bits((0, 0), 4))
    lab_x = uniform((0, 0), 40)  # uniform(PRNGKey(0), (1, 8, 5)), row-major

    # 1. The printers came with the program.
    scripts = run("info auto-load python-scripts")
    check(re.search(r"Yes\s+gdb\.inlined-script\.minitrax", scripts) is not None,
          "the printers are auto-loaded from .debug_gdb_scripts", scripts)

    # 2. Break in forward_unbatched, head 0; the program's output goes to a file.
    fd, out_file = tempfile.mkstemp(prefix="gdb_reformer_lab_", suffix=".txt")
    os.close(fd)
    run("break " + FORWARD_UNBATCHED)
    try:
        run("run --step 7 > %s" % out_file)
    except gdb.error as e:
        print("SKIP: gdb cannot run the program here (%s)" % e)
        return 77
    if "forward_unbatched" not in frame_name():
        print("FAIL: the program did not stop in forward_unbatched")
        return 1
    check(run("print head").strip().endswith("= 0") and
          run("print update_state").strip().endswith("= true"),
          "the first stop is head 0, hashing (update_state = true)")

    # 3. The input x: one example, [8, 5], JAX's numbers.
    px = run("print x")
    tx = tensor_text(px)
    check(tx.startswith("Tensor(float32, shape=[8, 5], [["), "x is [8, 5] float32", tx)
    got = floats(numbers(tx))
    check(len(got) == 30 and close(got[:5], lab_x[:5], 2e-6) and close(got[-5:], lab_x[-5:], 2e-6),
          "x rows 0 and 7 = JAX's uniform(PRNGKey(0), (1, 8, 5)) (%s ...)" % got[:5],
          "gdb: %s\nJAX: %s ... %s" % (got, lab_x[:5], lab_x[-5:]))

    # 4. The layer (OurLSHSelfAttention, through its dynamic type) and a weight.
    player = run("print *this")
    check("OurLSHSelfAttention LSHSelfAttention(n_in=1, n_out=1, weights [3, 5, 3], [3, 5, 4], "
          "[3, 4, 5])" in player,
          "the layer prints its class, name, n_in/n_out and weight shapes (3 heads)", player)
    check("n_hashes = 5" in player
          and "n_buckets = std::vector of length 1, capacity 1 = {4}" in player
          and "chunk_len = std::optional<long> = {[contained value] = 8}" in player,
          "the layer's options: n_hashes 5, n_buckets 4, chunk_len 8", player)
    pw = run("print weights[0]")
    check(tensor_text(pw).startswith("Tensor(float32, shape=[5, 3], "), "head 0's w_q is [5, 3]",
          pw)

    # 5. The buckets, once hashed (sort_buckets is the next call), all 40 of them.
    run("tbreak minitrax::layers::research::sort_buckets")
    run("continue")
    run("up")
    run("set minitrax-edge-items 20")
    pb = run("print buckets")
    run("set minitrax-edge-items 3")
    tb = tensor_text(pb)
    check(tb.startswith("Tensor(int32, shape=[40], ["), "buckets is [40] int32", tb)
    buckets = [int(b) for b in numbers(tb)]
    check(len(buckets) == 40 and all(4 * r <= b <= 4 * r + 3
                                     for r in range(5) for b in buckets[8 * r:8 * r + 8]),
          "round r's buckets lie in [4r, 4r+3]", buckets)

    # 6. Each head's output: step out of forward_unbatched, three times.
    rows0, rows7 = [], []
    for head in range(3):
        if head > 0:
            run("continue")
        check("forward_unbatched" in frame_name() and
              run("print head").strip().endswith("= %d" % head), "stopped for head %d" % head)
        run("frame function " + FORWARD_UNBATCHED)
        run("finish")
        pout = run("print $")
        tout = tensor_text(pout.split("out = ", 1)[1])
        check(tout.startswith("Tensor(float32, shape=[8, 5], "), "head %d's out is [8, 5]" % head,
              tout)
        vals = floats(numbers(tout))
        rows0.append(vals[:5])
        rows7.append(vals[-5:])
    sum0 = [sum(r[j] for r in rows0) for j in range(5)]
    sum7 = [sum(r[j] for r in rows7) for j in range(5)]
    check(close(sum0, LAB_ROW0, 1e-5) and close(sum7, LAB_ROW7, 1e-5),
          "the heads' outputs add up to the lab's expected output, rows 0 and 7",
          "row 0 %s vs %s\nrow 7 %s vs %s" % (sum0, LAB_ROW0, sum7, LAB_ROW7))

    # 7. Let the program finish; compare with what it printed itself.
    gdb.execute("delete")
    run("continue")
    pcode = run("print $_exitcode")
    check(pcode.strip().endswith("= 0"), "reformer_lab --step 7 exits with 0 (all its checks OK)",
          pcode)
    try:
        with open(out_file) as f:
            printed = f.read()
    finally:
        os.unlink(out_file)
    m = re.search(r"forward_unbatched \(head 0\)\n.*?\nbuckets \(40,\) \[([\d\s]+)\]", printed,
                  re.S)
    check(m is not None and [int(b) for b in m.group(1).split()] == buckets,
          "head 0's buckets: gdb's = the program's own printout", printed)
    m = re.search(r"DeviceArray\((.*?), dtype=float32\)", printed, re.S)
    y = floats(re.findall(r"-?\d+\.\d+e[-+]\d+", m.group(1))) if m else []
    check(len(y) == 40 and close(sum0, y[:5], 1e-5) and close(sum7, y[-5:], 1e-5),
          "the heads' outputs add up to the program's printed output, rows 0 and 7",
          "gdb: %s ... %s\nprogram: %s" % (sum0, sum7, y))
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


try:
    code = main()
except Exception:  # noqa: BLE001  (a bug here is a failure, not a pass)
    traceback.print_exc()
    code = 1
quit_with(code)
