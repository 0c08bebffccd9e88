# daemon_bench: two real agentmeshd daemons, a real amesh-relay and amesh-registry, and the amesh
# CLI, all started by the bench in a temp dir (binary paths baked in; flags override them).
if(NOT TARGET agentmeshd OR NOT TARGET amesh-relay OR NOT TARGET amesh-registry
   OR NOT TARGET amesh)
  return()
endif()
add_executable(daemon_bench ${CMAKE_CURRENT_SOURCE_DIR}/daemon_bench.cpp
                            ${CMAKE_CURRENT_SOURCE_DIR}/../support/process.cpp)
target_include_directories(daemon_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../support)
target_link_libraries(daemon_bench PRIVATE agentmesh_core PkgConfig::SODIUM)
target_compile_definitions(daemon_bench PRIVATE
  AGENTMESHD_BIN="$<TARGET_FILE:agentmeshd>"
  AMESH_BIN="$<TARGET_FILE:amesh>"
  AMESH_RELAY_BIN="$<TARGET_FILE:amesh-relay>"
  AMESH_REGISTRY_BIN="$<TARGET_FILE:amesh-registry>")
add_dependencies(daemon_bench agentmeshd amesh amesh-relay amesh-registry)
