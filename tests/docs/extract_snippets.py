#!/usr/bin/env python3
"""minitrax/tests/docs/extract_snippets.py: turns the C++ snippets of Markdown files
into translation units, so that the ctest `doc_snippets` can compile (and link) them.

    extract_snippets.py SOURCE_DIR OUT_DIR README.md docs/a.md ...

Every fenced block opened with ```cpp or ```c++ (indented or not) is a snippet. The
convention (docs/README of tests/docs/CMakeLists.txt says the same):

  * A snippet with `int main(` is a whole program: its own file, compiled as written.
  * Any other snippet is a fragment: its `#include` lines go to the top of the file,
    after `#include "minitrax.hpp"` and `<iostream>`, and the rest becomes the body of a function in a
    namespace of its own, with `using namespace minitrax;`.
  * HTML comments on the lines just above the fence (invisible on GitHub) adjust this:
      <!-- snippet: not compiled (why) -->   skipped; the reason is required
      <!-- snippet: namespace scope -->      the fragment declares functions or types:
                                             it goes at namespace scope, not in a body
      <!-- snippet: namespace NAME -->       the same, inside namespace NAME (e.g. a
                                             new op shown in minitrax::fastmath)
      <!-- snippet: continues -->            the fragment continues the file's previous
                                             snippet (same body: its names are in scope)
      <!-- snippet: part of NAME -->         the fragments of a page with the same NAME
                                             are one body, in order (a tutorial's story,
                                             with other snippets in between)
      <!-- snippet: given CODE -->           hidden set-up code placed before the
                                             fragment (may span lines; #include and
                                             #define lines go to the top of the file)
Each snippet line keeps its place: `#line` directives make the compiler report
errors as docs/x.md:LINE. A malformed marker becomes an `#error` at its line.

All fragments (of every page) are compiled in one file, doc_fragments.cpp, each group
in a namespace of its own: one compilation of the headers instead of one per page.
Writes OUT_DIR/<name>.cpp (only when changed, so builds stay incremental) and
OUT_DIR/snippets.cmake: set(MINITRAX_DOC_SNIPPET_SOURCES ...) and a summary.
"""
import os
import re
import sys

FENCE_OPEN = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(\S*)")
MARKER = re.compile(r"<!--\s*snippet:(.*?)-->", re.S)
MAIN = re.compile(r"^\s*int\s+main\s*\(", re.M)


class Snippet:
    def __init__(self, path, line, code):
        self.path = path    # relative to the source dir, for #line
        self.line = line    # the md line of the first code line
        self.code = code    # list of lines, indentation of the fence removed
        self.given = []     # (md line, code text)
        self.scope = False  # namespace scope
        self.ns = None      # a named namespace to put it in
        self.continues = False
        self.part_of = None  # a named body shared by several snippets of the page
        self.skip = None
        self.errors = []    # (md line, message)


def parse_markers(lines, fence_index, snip):
    """The HTML comments directly above the fence (no blank line in between)."""
    # Collect every comment whose lines end right above the fence.
    start = fence_index
    k = fence_index - 1
    while k >= 0 and lines[k].strip():
        if lines[k].rstrip().endswith("-->"):
            m = k
            while m >= 0 and "<!--" not in lines[m]:
                m -= 1
            if m < 0:
                break
            start = m
            k = m - 1
        else:
            break
    text = "".join(lines[start:fence_index])
    first_line = start + 1
    for m in MARKER.finditer(text):
        line = first_line + text[:m.start()].count("\n")
        body = m.group(1).strip()
        if body.startswith("not compiled"):
            reason = re.fullmatch(r"not compiled\s*\((.+)\)", body, re.S)
            if not reason:
                snip.errors.append((line, "'snippet: not compiled' needs a reason: "
                                          "<!-- snippet: not compiled (why) -->"))
            else:
                snip.skip = reason.group(1)
        elif body == "namespace scope":
            snip.scope = True
        elif re.fullmatch(r"namespace [A-Za-z_][A-Za-z0-9_:]*", body):
            snip.scope = True
            snip.ns = body.split()[1]
        elif body == "continues":
            snip.continues = True
        elif re.fullmatch(r"part of [A-Za-z0-9_-]+", body):
            snip.part_of = body.split()[2]
        elif body.startswith("given"):
            raw = m.group(1)
            offset = raw.find("given")
            after = raw[offset + len("given"):]
            lead = after[:len(after) - len(after.lstrip())]
            gline = line + raw[:offset].count("\n") + lead.count("\n")
            snip.given.append((gline, after.strip()))
        else:
            snip.errors.append((line, "unknown snippet marker '%s' (known: not compiled (why), "
                                      "namespace scope, namespace NAME, continues, part of NAME, given CODE)" % body))


def snippets_of(source_dir, rel):
    with open(os.path.join(source_dir, rel), encoding="utf-8") as f:
        lines = f.readlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence), lines[j]):
            j += 1
        if lang in ("cpp", "c++"):
            code = [l[len(indent):] if l.startswith(indent) else l.lstrip() for l in lines[i + 1:j]]
            snip = Snippet(rel, i + 2, [l.rstrip("\n") for l in code])
            parse_markers(lines, i, snip)
            out.append(snip)
        i = j + 1
    return out


def is_preprocessor(line):
    return re.match(r"^\s*#\s*(include|define)\b", line) is not None


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


GENLINE = object()  # a placeholder for a #line back to the generated file


class Unit:
    """One generated .cpp file."""

    def __init__(self, name):
        self.name = name
        self.top = []   # lines before the namespaces
        self.body = []

    def directive(self, lst, line, path):
        lst.append("#line %d %s" % (line, c_string(path)))

    def text(self):
        # GENLINE: back to this file's own line numbers after a snippet's #line.
        lines = self.top + self.body
        for i, l in enumerate(lines):
            if l is GENLINE:
                lines[i] = "#line %d %s" % (i + 2, c_string(self.name + ".cpp"))
        return "\n".join(lines) + "\n"


def emit_errors(unit, snip):
    for line, msg in snip.errors:
        unit.directive(unit.top, line, snip.path)
        unit.top.append("#error " + c_string(msg))


def emit_given_and_code(unit, snip, into):
    for gline, code in snip.given:
        for k, l in enumerate(code.split("\n")):
            target = unit.top if is_preprocessor(l) else into
            unit.directive(target, gline + k, snip.path)
            target.append(l)
    hoisted = [(k, l) for k, l in enumerate(snip.code) if is_preprocessor(l)]
    for k, l in hoisted:
        unit.directive(unit.top, snip.line + k, snip.path)
        unit.top.append(l)
    unit.directive(into, snip.line, snip.path)
    into.extend("" if is_preprocessor(l) else l for l in snip.code)


def generate(source_dir, files):
    """All fragments go to one file (one compilation: building time matters), each
    group in its own namespace; each whole program to a file of its own."""
    units = []
    summary = []
    frag = Unit("doc_fragments")
    frag.top.append("// Generated by tests/docs/extract_snippets.py from the fragments of "
                    "README.md and docs/*.md: do not edit.")
    frag.top.append('#include "minitrax.hpp"')
    frag.top.append("#include <iostream>")
    n_groups = 0
    for rel in files:
        stem = re.sub(r"[^A-Za-z0-9]+", "_", os.path.splitext(rel)[0]).strip("_")
        groups = []
        named = {}
        n_whole = n_frag = n_skip = 0
        for snip in snippets_of(source_dir, rel):
            if snip.skip is not None and not snip.errors:
                n_skip += 1
                continue
            if MAIN.search("\n".join(snip.code)) and not snip.errors:
                u = Unit("doc_%s_program%d" % (stem, n_whole + 1))
                u.top.append("// Generated by tests/docs/extract_snippets.py from %s: do not edit." % rel)
                u.directive(u.top, snip.line, snip.path)
                u.top.extend(snip.code)
                units.append(u)
                n_whole += 1
                continue
            emit_errors(frag, snip)
            n_frag += 1
            if snip.part_of and snip.part_of in named:
                g = named[snip.part_of]
            elif snip.continues and groups:
                g = groups[-1]
            else:
                g = {"line": snip.line, "outer": [], "scope": [], "body": []}
                groups.append(g)
                if snip.part_of:
                    named[snip.part_of] = g
            if snip.ns:
                g["outer"].append("namespace %s {" % snip.ns)
                emit_given_and_code(frag, snip, g["outer"])
                g["outer"].append("}  // namespace %s" % snip.ns)
            elif snip.scope:
                emit_given_and_code(frag, snip, g["scope"])
            else:
                emit_given_and_code(frag, snip, g["body"])
        for g in groups:
            k = n_groups
            n_groups += 1
            frag.body.extend(g["outer"])
            frag.body.append(GENLINE)
            frag.body.append("namespace doc_snippet_%d {  // %s:%d" % (k, rel, g["line"]))
            frag.body.append("using namespace minitrax;")
            frag.body.extend(g["scope"])
            if g["body"]:
                frag.body.append(GENLINE)
                frag.body.append("[[maybe_unused]] void snippet() {")
                frag.body.extend(g["body"])
                frag.body.append(GENLINE)
                frag.body.append("}")
            frag.body.append("}  // namespace doc_snippet_%d" % k)
        if n_whole or n_frag or n_skip:
            summary.append("%s: %d whole program(s), %d fragment(s), %d not compiled"
                           % (rel, n_whole, n_frag, n_skip))
    if n_groups or any(l.startswith("#error") for l in frag.top):
        frag.body.append(GENLINE)
        frag.body.append("int main() { return 0; }")
        units.append(frag)
    return units, summary


def write_if_changed(path, text):
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    source_dir, out_dir, files = argv[1], argv[2], argv[3:]
    os.makedirs(out_dir, exist_ok=True)
    units, summary = generate(source_dir, files)
    names = []
    for u in units:
        write_if_changed(os.path.join(out_dir, u.name + ".cpp"), u.text())
        names.append(u.name)
    for f in os.listdir(out_dir):  # sources of snippets that are gone
        if f.endswith(".cpp") and f[:-4] not in names:
            os.remove(os.path.join(out_dir, f))
    cm = ["# Generated by tests/docs/extract_snippets.py: do not edit.",
          "set(MINITRAX_DOC_SNIPPET_UNITS %s)" % " ".join(names),
          "set(MINITRAX_DOC_SNIPPET_SUMMARY [=[%s]=])" % "\n".join(summary)]
    write_if_changed(os.path.join(out_dir, "snippets.cmake"), "\n".join(cm) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
