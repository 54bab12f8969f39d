#include "io/json_file.h"

#include <fstream>

#include "core/error.h"

namespace easel {

nlohmann::json read_json_object(const std::string& file, const char* where) {
  std::ifstream in(file);
  if (!in) fail(where, file + ": file not found");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(where, file + ": malformed JSON: " + e.what());
  }
  if (!j.is_object()) fail(where, file + ": expected a JSON object at the top level");
  return j;
}

}  // namespace easel
