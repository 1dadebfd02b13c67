# sonde_add_plugin(<kind>_<type> SOURCES a.c b.c [LIBS lib ...] [NOINSTALL])
# Builds a built-in stage as a plug-in .so under build/lib/sonde/, exactly like a third-party one:
# it sees only the public SDK (core/include) and links libsonde.
function(sonde_add_plugin name)
  cmake_parse_arguments(P "NOINSTALL" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} MODULE ${P_SOURCES})
  set_target_properties(${name} PROPERTIES PREFIX "" LIBRARY_OUTPUT_DIRECTORY ${SONDE_PLUGIN_OUT}
                                           C_VISIBILITY_PRESET hidden
                                           BUILD_RPATH "\$ORIGIN/.."
                                           INSTALL_RPATH "\$ORIGIN/..")
  target_link_libraries(${name} PRIVATE sonde_sdk ${P_LIBS})
  if(NOT P_NOINSTALL) # test-only plug-ins stay in the build tree
    install(TARGETS ${name} LIBRARY DESTINATION ${SONDE_PLUGIN_INSTALL_DIR})
  endif()
  set_property(GLOBAL APPEND PROPERTY SONDE_PLUGINS ${name})
endfunction()
