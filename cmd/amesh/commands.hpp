// Helpers shared by the cmd_*.cpp files: declaring subcommands and options together with their
// completion metadata, and the usual "call, then print JSON or text" shape of a runner.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cli.hpp"
#include "input.hpp"
#include "output.hpp"

namespace amesh {

// Adds a subcommand whose runner is `run`. The subcommand appears in help and completions
// (group "Commands"); pass hidden = true to keep it out of both.
CLI::App* AddCommand(CLI::App& parent, Context& ctx, const std::string& name,
                     const std::string& description, Runner run, bool hidden = false);

// Adds a group command (policy, daemon) that only holds subcommands.
CLI::App* AddGroup(CLI::App& parent, const std::string& name, const std::string& description);

// Records what an option's value is, for completions.
CLI::Option* Kind(CLI::Option* option, Context& ctx, ValueKind kind);
// Records `choices` for completions and, with enforce, restricts the option to them (CLI11 check;
// pass false when the runner accepts aliases, e.g. tier numbers).
CLI::Option* Choices(CLI::Option* option, Context& ctx, std::vector<std::string> choices,
                     bool enforce = true);

// Calls `method`; on success prints the result as JSON (--json) or with `human`; on failure
// reports the error. Returns the exit status.
int CallAndPrint(Context& ctx, std::string_view method, const json& params,
                 const std::function<void(const json&)>& human,
                 agentmesh::rpc::Timeout timeout = Context::kDefaultTimeout);

// Validates an AMID argument; prints the error and returns false when invalid.
bool ValidAmid(Context& ctx, const std::string& amid, int* status);
// Validates and normalises a session id argument.
bool ValidSession(Context& ctx, std::string& session_id, int* status);

// A session's intent object as "category/subcategory" (or "category").
std::string IntentText(const json& intent);

}  // namespace amesh
