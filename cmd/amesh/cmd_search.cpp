// amesh search: find agents by capability (method `search`).
#include <cmath>

#include "commands.hpp"

namespace amesh {
namespace {

struct SearchArgs {
  std::string capability;
  std::string tier_min;
  double reputation_min = -1;
  int limit = 20;
  int offset = 0;
  std::string status;
};

std::string Reputation(const json& agent) {
  for (const char* key : {"reputation_score", "reputation"}) {
    if (auto it = agent.find(key); it != agent.end() && it->is_number()) {
      char buffer[16];
      std::snprintf(buffer, sizeof buffer, "%.2f", it->get<double>());
      return buffer;
    }
  }
  return "-";
}

int RunSearch(Context& ctx, const SearchArgs& args) {
  if (auto bad = CheckCapability(args.capability, true)) return ctx.UsageError(*bad);
  json params = {{"capability", args.capability}, {"limit", args.limit}};
  if (args.offset > 0) params["offset"] = args.offset;
  if (!args.tier_min.empty()) {
    auto tier = ParseTier(args.tier_min);
    if (!tier) return ctx.UsageError("--tier-min: " + tier.error());
    params["tier_min"] = *tier;
  }
  if (args.reputation_min >= 0) params["reputation_min"] = args.reputation_min;
  if (!args.status.empty()) params["status"] = args.status;
  return CallAndPrint(ctx, "search", params, [&](const json& r) {
    const json results = r.is_object() && r.contains("results") && r["results"].is_array()
                             ? r["results"]
                             : json::array();
    if (results.empty()) {
      ctx.out() << "No agents found for '" << args.capability << "'.\n";
      return;
    }
    Table table({"AMID", "NAME", "TIER", "REPUTATION", "STATUS", "CAPABILITIES"});
    for (const auto& agent : results) {
      table.AddRow({Field(agent, "amid"), Field(agent, "display_name"), Field(agent, "tier"),
                    Reputation(agent), Field(agent, "status"), Field(agent, "capabilities")});
    }
    table.Print(ctx.out());
    const long long total = IntField(r, "total", static_cast<long long>(results.size()));
    if (total > static_cast<long long>(results.size())) {
      const long long first = IntField(r, "offset", args.offset) + 1;
      ctx.out() << "(" << first << "-" << first + static_cast<long long>(results.size()) - 1
                << " of " << total << "; --offset for more)\n";
    }
  });
}

}  // namespace

void RegisterSearch(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<SearchArgs>();
  CLI::App* sub = AddCommand(root, ctx, "search",
                             "Find agents by capability (exact, or a prefix such as travel/*)",
                             [args](Context& c) { return RunSearch(c, *args); });
  sub->add_option("CAPABILITY", args->capability, "capability, e.g. travel/flights or travel/*")
      ->required();
  Choices(
      sub->add_option("--tier-min", args->tier_min, "lowest trust tier to list")->type_name("TIER"),
      ctx, {"anonymous", "verified", "organization"}, false);
  sub->add_option("--reputation-min", args->reputation_min, "lowest reputation (0 to 1)")
      ->type_name("R")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--limit", args->limit, "at most N results (1 to 100)")
      ->type_name("N")
      ->check(CLI::Range(1, 100));
  sub->add_option("--offset", args->offset, "skip the first N results")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  Choices(sub->add_option("--status", args->status, "only agents with this presence")
              ->type_name("STATUS"),
          ctx, {"online", "away", "offline", "dnd"});
}

}  // namespace amesh
