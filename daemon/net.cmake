# agentmeshd_net: the daemon's network clients (owned by the daemon-net work; included from
# daemon/CMakeLists.txt). RegistryClient drives libcurl's multi interface from the libuv loop;
# RelayLink keeps one authenticated WebSocket to amesh-relay on agentmesh_net's WsClient.
find_package(CURL 7.85 REQUIRED)  # CURLOPT_PROTOCOLS_STR
add_library(agentmeshd_net STATIC
  ${CMAKE_CURRENT_LIST_DIR}/curl_uv.cpp
  ${CMAKE_CURRENT_LIST_DIR}/registry_client.cpp
  ${CMAKE_CURRENT_LIST_DIR}/relay_link.cpp)
target_include_directories(agentmeshd_net PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(agentmeshd_net
  PUBLIC agentmesh_core agentmesh_net nlohmann_json::nlohmann_json
  PRIVATE CURL::libcurl PkgConfig::SODIUM fmt::fmt)
