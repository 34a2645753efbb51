# fuzz/run_seeded.cmake: one short, seeded libFuzzer run (a ctest of fuzz/CMakeLists.txt).
#   cmake -DFUZZER=<program> -DSEEDS=<corpus dir> -DWORK=<scratch dir> -DSECONDS=<n>
#         [-DMAX_LEN=<bytes>] -P run_seeded.cmake
# The scratch corpus starts empty each time, so a run depends only on the seeds, the
# seed number and the time; crash inputs are written to WORK/ (crash-<sha1> ...).
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
set(max_len)
if(MAX_LEN)
  set(max_len -max_len=${MAX_LEN})  # without it: the largest seed, at least 4096 bytes
endif()
execute_process(
  COMMAND ${FUZZER} -seed=1 -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          ${max_len} -print_final_stats=1 -artifact_prefix=${WORK}/ ${WORK}/corpus ${SEEDS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${rc}); the input is in ${WORK}/")
endif()
