# fieldsync_warnings(target): the project's warning set. Warnings are errors in CI builds
# (FIELDSYNC_WERROR=ON, set by the presets).
option(FIELDSYNC_WERROR "Treat warnings as errors" OFF)
function(fieldsync_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                         -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual
                         -Wnull-dereference -Wimplicit-fallthrough)
  if(FIELDSYNC_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
