// `easel preprocess`: run a ControlNet preprocessor on an image (src/preprocess).
#pragma once
#include <CLI/CLI.hpp>

namespace easel {
// Registers the subcommand on `app`; run_preprocess_command() runs it once parsed.
CLI::App* add_preprocess_command(CLI::App& app);
int run_preprocess_command();
}  // namespace easel
