# Runs examples/reformer_lab (the course lab in C++) and checks what it prints.
# Called by ctest as: cmake -DLAB=<path to reformer_lab> -P run_reformer_lab.cmake
#
# 1. All steps: exit status 0, the summary line says every check passed, no MISMATCH,
#    forward_unbatched ran once per head in steps 3 and 7, and a few of the lab's
#    deterministic lines appear exactly as the notebook prints them.
# 2. --step 7 alone runs only the LSH layer (what the gdb test breaks in).
# 3. --list lists seven steps; an unknown step number is a usage error (status 2).

if(NOT LAB)
  message(FATAL_ERROR "run_reformer_lab.cmake: pass -DLAB=<path to reformer_lab>")
endif()

function(run_lab out_var status_var)
  execute_process(COMMAND ${LAB} ${ARGN}
                  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE status
                  TIMEOUT 120)
  set(${out_var} "${out}${err}" PARENT_SCOPE)
  set(${status_var} "${status}" PARENT_SCOPE)
endfunction()

function(expect_text what)
  string(FIND "${OUT}" "${what}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "reformer_lab ${ARGS_SHOWN}: expected this line in the output:\n"
                        "  ${what}\n--- output ---\n${OUT}")
  endif()
endfunction()

function(count_of what n_expected)
  string(REGEX MATCHALL "${what}" hits "${OUT}")
  list(LENGTH hits n)
  if(NOT n EQUAL n_expected)
    message(FATAL_ERROR "reformer_lab ${ARGS_SHOWN}: expected '${what}' ${n_expected} times, "
                        "found it ${n} times\n--- output ---\n${OUT}")
  endif()
endfunction()

# ---- 1. all steps ------------------------------------------------------------------------
set(ARGS_SHOWN "(all steps)")
run_lab(OUT STATUS)
if(NOT STATUS EQUAL 0)
  message(FATAL_ERROR "reformer_lab (all steps) exited with ${STATUS}\n--- output ---\n${OUT}")
endif()
if(NOT OUT MATCHES "reformer_lab: [0-9]+ checks, all OK")
  message(FATAL_ERROR "reformer_lab: no 'N checks, all OK' summary\n--- output ---\n${OUT}")
endif()
count_of("MISMATCH" 0)
count_of("==== step [1-7]:" 7)
count_of("ourSelfAttention:forward_unbatched" 3)
count_of("OurLSHSelfAttention:forward_unbatched" 3)
expect_text("Our attend dots post softmax (8, 8) (8, 1)")
expect_text("ohv [ 3  3  3  3  3  3  3  3  5  5  5  5  5  5  5  5 11 11 11 11 11 11 11 11]")
expect_text("buckets_and_t (16,) [ 0  9 18 27  4 13 22 31 32 41 50 59 36 45 54 63]")
expect_text("sticker (16,) [ 0  4  1  5  2  6  3  7  8 12  9 13 10 14 11 15]")
expect_text("undo_sort (16,) [ 0  2  4  6  1  3  5  7  8 10 12 14  9 11 13 15]")
expect_text("logits.shape, logits (16,) [ 0.6931472  3.6931472 12.693148  27.693148")
expect_text("check invariant: = full shared-QK attention with the self mask")

# ---- 2. --step 7 alone ---------------------------------------------------------------------
set(ARGS_SHOWN "--step 7")
run_lab(OUT STATUS --step 7)
if(NOT STATUS EQUAL 0)
  message(FATAL_ERROR "reformer_lab --step 7 exited with ${STATUS}\n--- output ---\n${OUT}")
endif()
count_of("==== step [1-7]:" 1)
count_of("==== step 7:" 1)
count_of("OurLSHSelfAttention:forward_unbatched" 3)
count_of("MISMATCH" 0)

# ---- 3. --list and a usage error --------------------------------------------------------------
set(ARGS_SHOWN "--list")
run_lab(OUT STATUS --list)
if(NOT STATUS EQUAL 0)
  message(FATAL_ERROR "reformer_lab --list exited with ${STATUS}\n${OUT}")
endif()
count_of("\n  [1-7]  " 7)
set(ARGS_SHOWN "--step 8")
run_lab(OUT STATUS --step 8)
if(NOT STATUS EQUAL 2)
  message(FATAL_ERROR "reformer_lab --step 8 should be a usage error (status 2), got ${STATUS}\n${OUT}")
endif()
message(STATUS "reformer_lab: all steps OK, --step 7 alone OK, --list and usage errors OK")
