// amesh lookup: one agent's registry entry (method `lookup`).
#include "commands.hpp"

namespace amesh {

void RegisterLookup(CLI::App& root, Context& ctx) {
  auto amid = std::make_shared<std::string>();
  CLI::App* sub = AddCommand(
      root, ctx, "lookup", "Show an agent's registry entry (keys, tier, capabilities, presence)",
      [amid](Context& c) {
        int status = 0;
        if (!ValidAmid(c, *amid, &status)) return status;
        auto result = c.Call("lookup", json{{"amid", *amid}});
        if (!result) {
          return c.Fail(result.error(), result.error().data_code == "not_found"
                                            ? "the registry does not know " + *amid +
                                                  ": has it run `amesh register`?"
                                            : "");
        }
        if (c.json_output()) {
          c.PrintJson(*result);
          return kExitOk;
        }
        std::vector<std::pair<std::string, std::string>> fields;
        if (result->is_object()) {
          for (const auto& [key, value] : result->items())
            fields.emplace_back(key, CellText(value));
        }
        PrintFields(c.out(), fields);
        return kExitOk;
      });
  Kind(sub->add_option("AMID", *amid, "the agent's AMID")->required(), ctx, ValueKind::kAmid);
}

}  // namespace amesh
