// Config files: a JSON object read from disk, with errors that name the file.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace easel {

// The JSON object in `file`. Errors (easel::Error, tagged `where`): "FILE: file not found",
// "FILE: malformed JSON: ...", "FILE: expected a JSON object at the top level".
nlohmann::json read_json_object(const std::string& file, const char* where);

}  // namespace easel
