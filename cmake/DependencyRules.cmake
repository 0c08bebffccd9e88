# Architectural rule: the pure protocol core performs no I/O. It may link libsodium, fmt and
# nlohmann_json, and nothing that opens sockets, files or databases. Checked at configure time so
# a violating change cannot even build.
function(agentmesh_forbid_links target)
  get_target_property(_deps ${target} LINK_LIBRARIES)
  get_target_property(_ideps ${target} INTERFACE_LINK_LIBRARIES)
  foreach(_dep IN LISTS _deps _ideps)
    if(NOT _dep)
      continue()
    endif()
    string(TOLOWER "${_dep}" _lower)
    foreach(_banned IN LISTS ARGN)
      if(_lower MATCHES "${_banned}")
        message(FATAL_ERROR
          "${target} must stay I/O-free but links '${_dep}' (matches '${_banned}'). "
          "Move the code that needs it into an I/O target.")
      endif()
    endforeach()
  endforeach()
endfunction()

agentmesh_forbid_links(agentmesh_core "uv" "curl" "sqlite" "ssl" "crypto::" "openssl" "wslay"
                       "pq" "http_parser" "cares")
