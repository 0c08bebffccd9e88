# Run at install time (install(CODE)): copies the systemd unit UNIT_SOURCE to
# <prefix>/UNIT_DESTINATION, with its /usr/local/bin/ paths pointing at <prefix>/UNIT_BINDIR.
file(READ "${UNIT_SOURCE}" _text)
if(IS_ABSOLUTE "${UNIT_BINDIR}")
  set(_bindir "${UNIT_BINDIR}")
else()
  set(_bindir "${CMAKE_INSTALL_PREFIX}/${UNIT_BINDIR}")
endif()
string(REPLACE "/usr/local/bin/" "${_bindir}/" _text "${_text}")
get_filename_component(_name "${UNIT_SOURCE}" NAME)
set(_dir "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${UNIT_DESTINATION}")
message(STATUS "Installing: ${_dir}/${_name}")
file(MAKE_DIRECTORY "${_dir}")
file(WRITE "${_dir}/${_name}" "${_text}")
