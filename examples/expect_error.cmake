# examples/expect_error.cmake: runs an example that must fail cleanly (a ctest of
# examples/CMakeLists.txt).
#   cmake -DPROGRAM=<exe> -DWORK=<scratch dir> -DEXPECT=<text> -P expect_error.cmake -- ARGS...
# WORK is emptied and holds a regular file WORK/file, so an argument WORK/file/x names a
# folder that cannot be created. The program must exit with status 1 (not 134 from
# std::terminate) and print exactly one stderr line: EXPECT, with <WORK> standing for WORK.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
file(WRITE ${WORK}/file "a regular file, not a folder\n")

# The arguments after "--" on the cmake command line.
set(args)
set(take OFF)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE ${last})
  if(take)
    string(REPLACE "<WORK>" "${WORK}" a "${CMAKE_ARGV${i}}")
    list(APPEND args "${a}")
  elseif("${CMAKE_ARGV${i}}" STREQUAL "--")
    set(take ON)
  endif()
endforeach()

execute_process(COMMAND ${PROGRAM} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
string(REPLACE "<WORK>" "${WORK}" expect "${EXPECT}")
if(NOT rc STREQUAL "1")
  message(FATAL_ERROR "${PROGRAM} exited with '${rc}', expected 1\nstderr:\n${err}")
endif()
if(NOT err STREQUAL "${expect}\n")
  message(FATAL_ERROR "${PROGRAM}: stderr is\n${err}\nexpected\n${expect}\n")
endif()
message(STATUS "exit 1, stderr: ${err}")
