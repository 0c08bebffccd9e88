// Test support: a blocking HTTP GET to a server on 127.0.0.1 (health, metrics, registry reads).
#pragma once

#include <cstdint>
#include <string>

namespace agentmesh::testing {

// GET http://127.0.0.1:port/path as HTTP/1.0 (so the body is never chunked) with
// "Connection: close"; the whole response (status line, headers and body) as read until the
// server closed, or "" when it could not connect.
std::string LoopbackHttpGet(std::uint16_t port, const std::string& path);

// The body of an HTTP response ("" when it has no header/body separator).
std::string HttpResponseBody(const std::string& response);

}  // namespace agentmesh::testing
