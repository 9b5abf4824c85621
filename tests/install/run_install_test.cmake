# Installs the build tree into a scratch prefix, then builds and runs tests/install against it
# twice: through find_package(herald) and through pkg-config. Any failure fails the test.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(JOIN " " cmd ${ARGN})
    message(FATAL_ERROR "install test: '${cmd}' failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

set(prefix ${HERALD_TEST_WORK}/prefix)
file(REMOVE_RECURSE ${HERALD_TEST_WORK})
if(HERALD_CONFIG)
  set(config_args --config ${HERALD_CONFIG})
endif()
run(${CMAKE_COMMAND} --install ${HERALD_BUILD_DIR} --prefix ${prefix} ${config_args})

# 1. CMake package.
run(${CMAKE_COMMAND} -S ${HERALD_TEST_SOURCE} -B ${HERALD_TEST_WORK}/build
  -G ${HERALD_GENERATOR} -DCMAKE_CXX_COMPILER=${HERALD_CXX} -DCMAKE_PREFIX_PATH=${prefix}
  -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${HERALD_TEST_WORK}/build)
run(${HERALD_TEST_WORK}/build/consumer)

# 2. pkg-config, with the compiler driven by hand.
find_program(PKG_CONFIG pkg-config REQUIRED)
file(GLOB_RECURSE pc_files ${prefix}/*/herald.pc)
list(GET pc_files 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs herald
  OUTPUT_VARIABLE pc_flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install test: pkg-config does not know herald")
endif()
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run(${HERALD_CXX} ${HERALD_TEST_SOURCE}/consumer.cpp ${pc_flags}
  -o ${HERALD_TEST_WORK}/consumer_pkgconfig)
run(${HERALD_TEST_WORK}/consumer_pkgconfig)
