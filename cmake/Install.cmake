# `cmake --install`: the four programs (installed by their own folders), man pages, shell
# completions and systemd units, under CMAKE_INSTALL_PREFIX (or --prefix) and DESTDIR.
include(GNUInstallDirs)

foreach(_page amesh.1 agentmesh-policy.5 agentmesh.7 agentmeshd.8 amesh-relay.8 amesh-registry.8)
  string(REGEX MATCH "[0-9]$" _section ${_page})
  install(FILES ${CMAKE_SOURCE_DIR}/man/${_page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${_section})
endforeach()

install(FILES ${CMAKE_SOURCE_DIR}/completions/amesh.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME amesh)
install(FILES ${CMAKE_SOURCE_DIR}/completions/_amesh
        DESTINATION ${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions)
install(FILES ${CMAKE_SOURCE_DIR}/completions/amesh.fish
        DESTINATION ${CMAKE_INSTALL_DATADIR}/fish/vendor_completions.d)

# The units in the tree name /usr/local/bin (for copying by hand); installed, they name the
# bindir of the prefix given at install time.
foreach(_unit daemon/systemd/agentmeshd.service:user
              servers/relay/systemd/amesh-relay.service:system
              servers/registry/systemd/amesh-registry.service:system)
  string(REPLACE ":" ";" _parts ${_unit})
  list(GET _parts 0 _source)
  list(GET _parts 1 _kind)
  install(CODE "set(UNIT_SOURCE \"${CMAKE_SOURCE_DIR}/${_source}\")
set(UNIT_DESTINATION \"lib/systemd/${_kind}\")
set(UNIT_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
include(\"${CMAKE_SOURCE_DIR}/cmake/InstallUnit.cmake\")")
endforeach()
