# Installs herald::herald with a CMake package (find_package(herald)) and a pkg-config file.
include(CMakePackageConfigHelpers)

install(TARGETS herald
  EXPORT heraldTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/herald DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")

set(HERALD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/herald)
install(EXPORT heraldTargets NAMESPACE herald:: DESTINATION ${HERALD_CMAKE_DIR})
configure_package_config_file(cmake/heraldConfig.cmake.in
  ${PROJECT_BINARY_DIR}/heraldConfig.cmake
  INSTALL_DESTINATION ${HERALD_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/heraldConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/heraldConfig.cmake
  ${PROJECT_BINARY_DIR}/heraldConfigVersion.cmake
  DESTINATION ${HERALD_CMAKE_DIR})

# Relocatable: the .pc file finds the prefix from its own location, so that
# `cmake --install --prefix ANYWHERE` yields a working file.
file(RELATIVE_PATH HERALD_PC_TO_PREFIX
  "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(cmake/herald.pc.in ${PROJECT_BINARY_DIR}/herald.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/herald.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
