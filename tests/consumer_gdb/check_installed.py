# minitrax/tests/consumer_gdb/check_installed.py: run by gdb before
# tests/gdb/check_printers.py on a program built against the installed debug package
# (run_consumer_gdb_test.cmake). It checks what a Release package lacks: the library's
# types (a Release build gives "<unreadable Layer: No type named minitrax::base::Layer.>"),
# a line table and the source file of a library function, and that `step` from the
# program's own code goes into the library. Exit status 1 on a failure (77 when gdb
# cannot run programs); otherwise check_printers.py runs next, on a fresh run.
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

# Step from the program's call of the layer into the library: at most 30 `step`s (the
# first ones go through std::shared_ptr's operator*, in the program's own debug info)
# until gdb stands on a line of a minitrax .cpp file. With a Release library gdb has
# no lines for library code and `step` goes over it.
gdb.execute("set confirm off")
gdb.execute("set pagination off")
main_file = gdb.decode_line("main")[1][0].symtab.fullname()
with open(main_file) as f:
    call_line = next(i + 1 for i, l in enumerate(f) if "(*layer)(x)" in l)
gdb.execute("tbreak %s:%d" % (main_file, call_line))
stepped_into = None
try:
    gdb.execute("run", to_string=True)
    for _ in range(30):
        gdb.execute("step", to_string=True)
        sal = gdb.selected_frame().find_sal()
        name = sal.symtab.filename if sal.symtab else ""
        if re.search(r"(^|/)(core|autodiff|layers)/.*\.cpp$", name):
            stepped_into = "%s:%d in %s" % (name, sal.line, gdb.selected_frame().name())
            break
except gdb.error as e:
    if "ptrace" in str(e) or "cannot" in str(e).lower():
        print("SKIP: gdb cannot run the program here (%s)" % e)
        gdb.execute("quit 77")
    stepped_into = None
    print("gdb.error: %s" % e)
print("stepped into: %s" % stepped_into)
check(stepped_into is not None, "`step` from the program's call goes into library code", stepped_into)
try:
    gdb.execute("kill", to_string=True)
except gdb.error:
    pass

if failures:
    print("%d failure(s) in check_installed.py" % len(failures))
    gdb.execute("quit 1")
