# registry_bench (issue 4): loads N agents straight into the backend (OpenStore from
# amesh_registry_lib), starts the real amesh-registry binary (path baked in, --registry-bin
# overrides) and drives it over keep-alive HTTP/1.1 from its own libuv load generator. With
# libpq present it can also run against a throw-away PostgreSQL server (tests/support).
add_executable(registry_bench ${CMAKE_CURRENT_SOURCE_DIR}/registry_bench.cpp
                              ${CMAKE_CURRENT_SOURCE_DIR}/../support/process.cpp)
target_include_directories(registry_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../support)
target_link_libraries(registry_bench PRIVATE amesh_registry_lib agentmesh_net agentmesh_core
                                             PkgConfig::SODIUM)
target_compile_definitions(registry_bench PRIVATE
                           AMESH_REGISTRY_BIN="$<TARGET_FILE:amesh-registry>")
if(TARGET agentmesh_pg AND TARGET PkgConfig::AGENTMESH_PQ)
  target_sources(registry_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../support/postgres_server.cpp)
  target_link_libraries(registry_bench PRIVATE PkgConfig::AGENTMESH_PQ)
  target_compile_definitions(registry_bench PRIVATE AMESH_BENCH_POSTGRES=1)
endif()
add_dependencies(registry_bench amesh-registry)
