# make install PREFIX=...: the binary, the built-in plug-ins, libsonde, the SDK headers (with the
# generated OTLP headers under include/sonde/proto), a pkg-config file and a CMake package.
install(TARGETS sonde RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS sonde_sdk EXPORT sondeTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} ${CMAKE_INSTALL_INCLUDEDIR}/sonde/proto)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/core/include/sonde DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
install(FILES ${CMAKE_BINARY_DIR}/include/sonde/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sonde)
install(DIRECTORY ${SONDE_PROTO_OUT}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sonde/proto
        FILES_MATCHING PATTERN "*.h")
install(DIRECTORY ${CMAKE_SOURCE_DIR}/config/pipelines DESTINATION ${CMAKE_INSTALL_DATADIR}/sonde)

# The prefix is found from the .pc file's own place, not fixed at configure time, so that
# `cmake --install --prefix DIR` (and DESTDIR staging) gives a .pc that points into DIR.
file(RELATIVE_PATH SONDE_PC_RELPREFIX /p/${CMAKE_INSTALL_LIBDIR}/pkgconfig /p)
string(REGEX REPLACE "/$" "" SONDE_PC_RELPREFIX "${SONDE_PC_RELPREFIX}")
configure_file(${CMAKE_SOURCE_DIR}/cmake/sonde.pc.in ${CMAKE_BINARY_DIR}/sonde.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/sonde.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

include(CMakePackageConfigHelpers)
set_target_properties(sonde_sdk PROPERTIES EXPORT_NAME sdk)
install(EXPORT sondeTargets NAMESPACE sonde:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sonde)
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/sondeConfig.cmake.in
  ${CMAKE_BINARY_DIR}/sondeConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sonde)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/sondeConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_BINARY_DIR}/sondeConfig.cmake ${CMAKE_BINARY_DIR}/sondeConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sonde)
