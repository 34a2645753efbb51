# The ctest install_debug_and_gdb (label install;gdb; run in the debug preset):
#   1. installs this Debug build of minitrax (libminitraxd.a, the headers, the exported
#      targets, the gdb printers) into a scratch prefix, as a user would;
#   2. builds tests/gdb/gdb_target.cpp as an outside project against it
#      (tests/consumer_gdb/CMakeLists.txt, CMAKE_BUILD_TYPE=Debug);
#   3. runs gdb in batch mode on that program with only the consumer's build folder in
#      the auto-load safe path: check_installed.py (the library's types, source lines
#      and files are there; `step` goes from the program into the library), then tests/gdb/check_printers.py (the printers load from the
#      program itself; in forward_unbatched, a library frame, it prints a Var, the layer,
#      a weight Tensor, a Key and tape nodes and compares them with known numbers and
#      with what the program printed);
#   4. when a Release build is at RELEASE_BUILD_DIR (the release preset's), installs it
#      into the same prefix and checks that find_package(minitrax) gives a Release
#      consumer libminitrax.a and a Debug consumer libminitraxd.a.
# Variables: SOURCE_DIR, BUILD_DIR, WORK_DIR, GDB, RELEASE_BUILD_DIR (may not exist).
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
set(consumer ${SOURCE_DIR}/tests/consumer_gdb)

function(run_or_fail what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
endfunction()

function(configure_consumer dir build_type)
  run_or_fail("configuring the consumer (${build_type})"
    ${CMAKE_COMMAND} -S ${consumer} -B ${dir} -DCMAKE_BUILD_TYPE=${build_type}
    -DCMAKE_PREFIX_PATH=${prefix} -DGDB_TARGET_SOURCE=${SOURCE_DIR}/tests/gdb/gdb_target.cpp)
endfunction()

function(expect_library dir name)
  file(STRINGS ${dir}/minitrax_library.txt lib)
  get_filename_component(got ${lib} NAME)
  if(NOT got STREQUAL name)
    message(FATAL_ERROR "find_package(minitrax) in ${dir} chose ${lib}, expected ${name}")
  endif()
  message(STATUS "ok: ${dir} links ${lib}")
endfunction()

# 1. Install this build.
if(NOT EXISTS ${BUILD_DIR}/libminitraxd.a)
  message(FATAL_ERROR "${BUILD_DIR}/libminitraxd.a is missing: build the library first "
                      "(cmake --build ${BUILD_DIR} --target minitrax)")
endif()
run_or_fail("cmake --install ${BUILD_DIR}" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f lib/libminitraxd.a share/minitrax/gdb/minitrax_printers.py include/minitrax/minitrax.hpp)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "the installed package lacks ${f}")
  endif()
endforeach()

# 2. Build the consumer.
configure_consumer(${WORK_DIR}/debug Debug)
expect_library(${WORK_DIR}/debug libminitraxd.a)
run_or_fail("building the consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/debug)

# 3. gdb. Only the consumer's own folder is trusted: the printers must come with it.
if(NOT GDB)
  message(STATUS "SKIPPED the gdb part: gdb was not found (apt-get install gdb)")
else()
  execute_process(
    COMMAND ${GDB} -nx -batch -iex "add-auto-load-safe-path ${WORK_DIR}/debug"
      -x ${consumer}/check_installed.py -x ${SOURCE_DIR}/tests/gdb/check_printers.py
      --args ${WORK_DIR}/debug/gdb_consumer ${WORK_DIR}/gdb_consumer_out.txt
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}\n${err}")
  if(rc EQUAL 77)
    message(STATUS "SKIPPED the gdb part: gdb cannot run programs here")
  elseif(NOT rc EQUAL 0)
    message(FATAL_ERROR "gdb on the consumer of the installed debug package failed (${rc})")
  endif()
endif()

# 4. Side by side with a Release install in the same prefix.
if(RELEASE_BUILD_DIR AND EXISTS ${RELEASE_BUILD_DIR}/libminitrax.a)
  run_or_fail("cmake --install ${RELEASE_BUILD_DIR}"
    ${CMAKE_COMMAND} --install ${RELEASE_BUILD_DIR} --prefix ${prefix})
  configure_consumer(${WORK_DIR}/release Release)
  expect_library(${WORK_DIR}/release libminitrax.a)
  configure_consumer(${WORK_DIR}/debug Debug)  # again, now that both are installed
  expect_library(${WORK_DIR}/debug libminitraxd.a)
else()
  message(STATUS "side-by-side check skipped: no Release build at '${RELEASE_BUILD_DIR}' "
                 "(cmake --preset release && cmake --build --preset release)")
endif()
