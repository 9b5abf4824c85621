# Every public header must compile on its own (STYLE.md, "Headers are the manual"). One
# generated translation unit per header, each including only that header, built as part of ALL.
# herald/asio.hpp needs standalone asio (HeraldAsio.cmake): checked when asio is found, skipped
# (with a message at configure time) when it is not.
include(HeraldAsio)
file(GLOB_RECURSE _herald_public_headers CONFIGURE_DEPENDS
  RELATIVE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/include/herald/*.hpp)
if(NOT HERALD_HAVE_ASIO)
  list(REMOVE_ITEM _herald_public_headers herald/asio.hpp)
endif()
set(_herald_check_sources)
foreach(_h IN LISTS _herald_public_headers)
  string(MAKE_C_IDENTIFIER "${_h}" _id)
  set(_src ${PROJECT_BINARY_DIR}/header_check/${_id}.cpp)
  file(CONFIGURE OUTPUT ${_src} CONTENT "#include <${_h}>\n#include <${_h}>  // include guard\n")
  list(APPEND _herald_check_sources ${_src})
endforeach()
add_library(herald_header_check OBJECT ${_herald_check_sources})
target_link_libraries(herald_header_check PRIVATE herald::herald herald_warnings)
if(HERALD_HAVE_ASIO)
  target_link_libraries(herald_header_check PRIVATE herald_asio)
endif()
