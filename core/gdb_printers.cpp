// minitrax/core/gdb_printers.cpp: embeds the gdb pretty-printers in every program.
//
// gdb runs the Python scripts it finds in an objfile's `.debug_gdb_scripts` section
// (https://sourceware.org/gdb/current/onlinedocs/gdb.html/dotdebug_005fgdb_005fscripts-section.html).
// This file puts tools/gdb/minitrax_printers.py there whole, as an inline script
// (entry kind 4: a name line, then the script text, then a NUL), so a program linked
// with minitrax, in the build tree or installed, carries its own printers:
//
//   gdb -iex 'add-auto-load-safe-path /path/to/build' ./build/debug/examples/...
//   (gdb) info auto-load python-scripts      ->  Yes  gdb.inlined-script.minitrax
//
// The section is "MS" (mergeable strings), so the linker keeps one copy when several
// objects carry the same entry. It is not loaded into memory and costs the program
// nothing at run time; `strip --strip-debug` removes it along with the debug info.
//
// The script's path comes from CMake (MINITRAX_GDB_PRINTERS_PY), which also makes
// this file recompile when the script changes. A static library only links the
// objects a program references, so CMake also passes the linker
// `--undefined=minitrax_gdb_printers_anchor`, which pulls this object in.

extern "C" {
// Referenced by the linker flag above; never read.
extern const char minitrax_gdb_printers_anchor;
const char minitrax_gdb_printers_anchor = 0;
}

#if defined(MINITRAX_GDB_PRINTERS_PY) && defined(__ELF__)
asm(".pushsection \".debug_gdb_scripts\", \"MS\",%progbits,1\n"
    ".byte 4\n"  // SECTION_SCRIPT_ID_PYTHON_TEXT
    ".ascii \"gdb.inlined-script.minitrax\\n\"\n"
    ".incbin \"" MINITRAX_GDB_PRINTERS_PY "\"\n"
    ".byte 0\n"
    ".popsection\n");
#endif
