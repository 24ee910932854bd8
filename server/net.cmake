# fieldsync::server_net and the fieldsync-server executable: the network layer (Boost.Beast and
# Asio over OpenSSL) and the server runtime around fieldsync::server_core (configuration,
# logging, demo data, graceful shutdown). Included at the end of server/CMakeLists.txt.
#
# Beast/Asio appear only in src/net/*.cpp: three translation units of ~25 s each. Everything
# else (and every public header) is free of them, so the rest of the build stays fast.

# The demo survey, embedded at build time (re-generated when the JSON file changes).
set(FIELDSYNC_BUNDLED_SCHEMA ${PROJECT_SOURCE_DIR}/protocol/schemas/household-survey.json)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${FIELDSYNC_BUNDLED_SCHEMA})
file(READ ${FIELDSYNC_BUNDLED_SCHEMA} FIELDSYNC_SCHEMA_TEXT)
configure_file(src/bundled_schema.cpp.in
               ${CMAKE_CURRENT_BINARY_DIR}/generated/bundled_schema.cpp @ONLY)

add_library(fieldsync_server_net
  src/config.cpp
  src/demo.cpp
  src/log.cpp
  src/metrics.cpp
  src/server.cpp
  src/static_files.cpp
  src/net/listener.cpp
  src/net/http_session.cpp
  src/net/websocket_session.cpp
  ${CMAKE_CURRENT_BINARY_DIR}/generated/bundled_schema.cpp
)
add_library(fieldsync::server_net ALIAS fieldsync_server_net)
set_target_properties(fieldsync_server_net PROPERTIES EXPORT_NAME server_net
                      OUTPUT_NAME fieldsync_server_net)
target_include_directories(fieldsync_server_net
  PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
  PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(fieldsync_server_net
  PUBLIC fieldsync::server_core Threads::Threads
  PRIVATE Boost::headers Boost::json OpenSSL::SSL OpenSSL::Crypto)
target_compile_definitions(fieldsync_server_net PRIVATE BOOST_ASIO_NO_DEPRECATED)
target_compile_features(fieldsync_server_net PUBLIC cxx_std_20)
fieldsync_warnings(fieldsync_server_net)

# GCC 12 at -O2 reports -Wnull-dereference inside inlined Asio strand code (a false positive
# located in Boost's and libstdc++'s headers, which -isystem cannot silence after inlining);
# under -fsanitize=thread GCC also warns (-Wtsan) about Asio's atomic_thread_fence. The same
# settings as sdk/src/beast_transport.cpp.
# (-Wno-tsan only for GCC with ThreadSanitizer; FIELDSYNC_SANITIZE may hold a list such as
# "address,undefined", which a $<BOOL:...> generator expression cannot take.)
set(fieldsync_no_tsan_warning "")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND FIELDSYNC_SANITIZE MATCHES "thread")
  set(fieldsync_no_tsan_warning ";-Wno-tsan")
endif()
set_source_files_properties(src/net/listener.cpp src/net/http_session.cpp
                            src/net/websocket_session.cpp PROPERTIES COMPILE_OPTIONS
  "-Wno-null-dereference${fieldsync_no_tsan_warning}")

find_package(CLI11 CONFIG QUIET)
add_executable(fieldsync-server src/main.cpp)
target_link_libraries(fieldsync-server PRIVATE fieldsync::server_net)
if(TARGET CLI11::CLI11)
  target_link_libraries(fieldsync-server PRIVATE CLI11::CLI11)
endif()
fieldsync_warnings(fieldsync-server)

# The server's allocator. Under load glibc's malloc costs the server a tenth or more of its CPU:
# records are decoded (many small blocks) on an I/O thread and freed on the store worker, and
# glibc frees across threads through locked arenas and chunk consolidation. jemalloc (Debian's
# libjemalloc-dev) keeps per-thread caches; linked into the executable it serves every
# allocation of the process, SQLite's and OpenSSL's included. With it the server's CPU per
# record fell 10-22% and ingest rose 9-26% (BENCHMARKS.md, "The allocator"). Only the server
# executable: the libraries (the SDK above all) leave the allocator to the application.
# Sanitizer builds keep the system allocator, which the sanitizers replace with their own.
set(FIELDSYNC_SERVER_MALLOC "auto" CACHE STRING
  "Allocator of fieldsync-server: auto (jemalloc when found and no sanitizer), jemalloc, system")
set_property(CACHE FIELDSYNC_SERVER_MALLOC PROPERTY STRINGS auto jemalloc system)
set(_fieldsync_malloc system)
if(NOT FIELDSYNC_SERVER_MALLOC STREQUAL "system")
  find_library(FIELDSYNC_JEMALLOC_LIBRARY NAMES jemalloc)
  if(FIELDSYNC_SANITIZE OR FIELDSYNC_BUILD_FUZZ)
    if(FIELDSYNC_SERVER_MALLOC STREQUAL "jemalloc")
      message(FATAL_ERROR "FIELDSYNC_SERVER_MALLOC=jemalloc cannot be used with sanitizers "
        "(FIELDSYNC_SANITIZE=${FIELDSYNC_SANITIZE}): they bring their own allocator. Use auto or system.")
    endif()
  elseif(FIELDSYNC_JEMALLOC_LIBRARY)
    set(_fieldsync_malloc jemalloc)
    target_link_libraries(fieldsync-server PRIVATE ${FIELDSYNC_JEMALLOC_LIBRARY})
  elseif(FIELDSYNC_SERVER_MALLOC STREQUAL "jemalloc")
    message(FATAL_ERROR "FIELDSYNC_SERVER_MALLOC=jemalloc but libjemalloc was not found: "
      "install libjemalloc-dev (scripts/install-deps.sh), or set FIELDSYNC_SERVER_MALLOC=system.")
  else()
    message(STATUS "fieldsync-server: libjemalloc not found, using the system allocator "
      "(install libjemalloc-dev for the server's measured allocator)")
  endif()
endif()
message(STATUS "fieldsync-server allocator: ${_fieldsync_malloc}")
target_compile_definitions(fieldsync-server PRIVATE FIELDSYNC_MALLOC_NAME="${_fieldsync_malloc}")
# A development build serves the source tree's console/ by default (main.cpp says the order).
target_compile_definitions(fieldsync-server PRIVATE
  FIELDSYNC_SOURCE_CONSOLE_DIR="${PROJECT_SOURCE_DIR}/console")

if(FIELDSYNC_INSTALL)
  install(TARGETS fieldsync-server RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  # The supervisor console: static files, found by the server at <prefix>/share/fieldsync/console.
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/console/
    DESTINATION ${CMAKE_INSTALL_DATADIR}/fieldsync/console)
endif()
