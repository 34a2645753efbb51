# The main job's SVGs as it writes them: runs examples/reformer_duplication on a tiny
# model for a few steps (with one evaluation, the case where the eval point used to be
# invisible), then checks curves.svg and table2.svg with svg_check (tests/svg_check.hpp).
#   cmake -DJOB=<reformer_duplication> -DCHECK=<svg_check> -DRSVG=<rsvg-convert or "">
#         -DWORK=<scratch folder> -P main_job_svgs.cmake
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${WORK})
execute_process(
  COMMAND ${JOB} --length 16 --vocab 8 --d-model 16 --d-ff 32 --n-heads 2 --d-attention-key 8
          --d-attention-value 8 --chunk-len 4 --n-buckets 4 --n-hashes 2 --batch 4 --steps 12
          --warmup-steps 5 --eval-every 10 --eval-batches 1 --eval-batch 8 --eval-n-hashes 1,2
          --progress none --output-dir ${WORK}/run
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 300)
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "${JOB} exited with '${rc}'\n${out}\n${err}")
endif()
foreach(f curves.svg table2.svg)
  if(NOT EXISTS ${WORK}/run/${f})
    message(FATAL_ERROR "${JOB} did not write ${f}\n${out}")
  endif()
endforeach()
execute_process(
  COMMAND ${CHECK} "${RSVG}" ${WORK}/png ${WORK}/run/curves.svg ${WORK}/run/table2.svg
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(rc STREQUAL "77")
  # ctest's SKIP_REGULAR_EXPRESSION sees "SKIPPED rendering" in the output above.
  return()
endif()
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "svg_check found problems (status ${rc})")
endif()
