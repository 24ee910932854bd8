# ctest driver of sdk_package_example: install the build tree into WORK_DIR/prefix, then
# configure, build and run sdk/examples/app (find_package(fieldsync) + fieldsync::sdk and
# fieldsync::sdk_c) in WORK_DIR, outside the source tree.
foreach(v BUILD_DIR WORK_DIR APP_SOURCE_DIR CXX_COMPILER C_COMPILER GENERATOR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "check_sdk_package.cmake: -D${v}=... is required")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f include/fieldsync/fieldsync.h include/fieldsync/replicator.hpp include/fieldsync/transport.hpp
          include/fieldsync/README.md)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
# No Beast in the installed headers.
file(GLOB_RECURSE headers ${prefix}/include/fieldsync/*.hpp ${prefix}/include/fieldsync/*.h)
foreach(h IN LISTS headers)
  file(STRINGS ${h} beast REGEX "#include <boost/(beast|asio)")
  if(beast)
    message(FATAL_ERROR "${h} includes Boost.Beast/Asio")
  endif()
endforeach()
# Build the app out of the source tree (a copy), against the installed package only.
file(COPY ${APP_SOURCE_DIR}/ DESTINATION ${WORK_DIR}/app-src)
run(${CMAKE_COMMAND} -S ${WORK_DIR}/app-src -B ${WORK_DIR}/app-build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_C_COMPILER=${C_COMPILER})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/app-build)
run(${WORK_DIR}/app-build/app ${WORK_DIR}/app.db)
run(${WORK_DIR}/app-build/app_c ${WORK_DIR}/app_c.db)
message(STATUS "sdk_package_example: installed SDK found, app (C++) and app_c (C) built and ran")
