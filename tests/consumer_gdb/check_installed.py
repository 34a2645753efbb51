# minitrax/tests/consumer_gdb/check_installed.py: run by gdb before
# tests/gdb/check_printers.py on a program built against the installed debug package
# (run_consumer_gdb_test.cmake). It checks, before the program runs, what a Release
# package lacks: the library's types (a Release build gives
# "<unreadable Layer: No type named minitrax::base::Layer.>") and a line table for a
# library function (without it gdb cannot step into library frames). Exit status 1 on
# a failure; otherwise check_printers.py runs next.
import os
import re

import gdb

failures = []


def check(cond, what, got=""):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)
        print("----- got:\n%s\n-----" % got)


for name in ("minitrax::base::Layer", "minitrax::core::Tensor", "minitrax::autodiff::Var"):
    try:
        t = gdb.lookup_type(name)
        check(t.sizeof > 0, "the library's debug info has the type %s" % name, str(t.sizeof))
    except gdb.error as e:
        check(False, "the library's debug info has the type %s" % name, str(e))

fn = "minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched"
try:
    line = gdb.execute("info line " + fn, to_string=True)
except gdb.error as e:
    line = "gdb.error: %s" % e
print("(gdb) info line %s\n%s" % (fn, line.rstrip()))
check(re.search(r'Line \d+ of "[^"]*layers/research/efficient_attention\.cpp"', line) is not None,
      "a library function has source lines (gdb can step into it)", line)
try:
    sal = gdb.decode_line(fn)[1][0]
    source = sal.symtab.fullname()
except (gdb.error, TypeError, IndexError, AttributeError) as e:
    source = "(no source: %s)" % e
check(os.path.isfile(source) and source.endswith("efficient_attention.cpp"),
      "gdb finds the library's source file (%s)" % source, source)

if failures:
    print("%d failure(s) before the program ran" % len(failures))
    gdb.execute("quit 1")
