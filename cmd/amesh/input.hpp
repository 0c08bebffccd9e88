// Local validation of everything a user types, so bad input fails with a precise message (exit 2)
// before the daemon is contacted. None of these functions touch keys or the network.
#pragma once

#include <expected>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace amesh {

class Context;

// A message describing why the input is wrong; the caller prints it.
using Check = std::optional<std::string>;

// An AMID (PROTOCOL.md §3): base58btc text that decodes to exactly 20 bytes and re-encodes to the
// same text. Returns nullopt when valid.
Check CheckAmid(std::string_view text);

// A session id: a UUID (8-4-4-4-12 hex digits). Upper case is accepted; see NormalizeSessionId.
Check CheckSessionId(std::string_view text);
bool LooksLikeSessionId(std::string_view text);
// Lower-cases a session id (the daemon's spelling).
std::string NormalizeSessionId(std::string_view text);

// An intent "category[/subcategory]", each part 1..64 characters of [a-z0-9_-].
Check CheckIntent(std::string_view text);
// A single intent segment (e.g. an --action).
Check CheckIntentSegment(std::string_view text, std::string_view what);

// A capability as the registry takes it: 1..128 bytes without control characters; '*' only in a
// search `pattern`, and then only alone or as a trailing "/*" (a prefix search).
Check CheckCapability(std::string_view text, bool pattern);

// An idempotency key for send/reply: 1..128 characters of [A-Za-z0-9_.:-].
Check CheckIdempotencyKey(std::string_view text);

// Parses JSON text without throwing. On failure the message names `what` and the syntax error
// position, e.g. "payload is not valid JSON: syntax error at line 1, column 9: …".
std::expected<nlohmann::json, std::string> ParseJsonText(std::string_view text,
                                                         std::string_view what);

// Reads a JSON argument the amesh way: `arg` is the positional value (nullopt when absent).
//   "-"              → read all of stdin
//   absent           → read stdin when it is not a terminal, else fail "missing <WHAT>"
//   anything else    → the JSON text itself
// With require_object, a non-object value fails ("<what> must be a JSON object").
std::expected<nlohmann::json, std::string> ReadJsonArgument(Context& ctx,
                                                            const std::optional<std::string>& arg,
                                                            std::string_view what,
                                                            bool require_object);

// Reads a JSON file ("-" = stdin).
std::expected<nlohmann::json, std::string> ReadJsonFile(Context& ctx, const std::string& path,
                                                        std::string_view what);

// `--since`: an RFC 3339 timestamp (returned unchanged) or a duration back from now: 90s, 15m,
// 2h, 7d (returned as an RFC 3339 UTC timestamp).
std::expected<std::string, std::string> ParseSince(std::string_view text);

// Seconds as a non-negative number ("1.5" allowed) → milliseconds.
std::expected<long long, std::string> SecondsToMillis(std::string_view text, std::string_view what);

// A tier name or its spec number: anonymous|2, verified|1, organization|1.5 → the name.
std::expected<std::string, std::string> ParseTier(std::string_view text);

}  // namespace amesh
