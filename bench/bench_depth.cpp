// Depth preprocessor timings (Google Benchmark): depth_anything_v2 (Small, and Base when written) and depth_midas
// (DPT-Hybrid) with the random full-size weights written by tools/bench_depth.py (which times the reference on the
// same files and inputs): the chelsea photo resized to SxS, processor resolution S, S = 512 and 1024.
//   python tools/bench_depth.py --dir DIR [--base] && EASEL_BENCH_DEPTH=DIR build/bin/bench_depth
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "bench_util.h"
#include "io/image.h"
#include "preprocess/preprocess.h"

using namespace easel;
using easel::bench::photo;

namespace {

// range(0): S.
void BM_Depth(benchmark::State& st, const char* name, const char* file) {
  const char* d = std::getenv("EASEL_BENCH_DEPTH");
  const std::string path = d ? std::string(d) + "/" + file : "";
  if (!d || !std::filesystem::exists(path)) {
    st.SkipWithError("set EASEL_BENCH_DEPTH (tools/bench_depth.py --dir DIR [--base] writes the models)");
    return;
  }
  const int s = (int)st.range(0);
  PreprocessRun run;
  run.model_path = path;
  const Image& in = photo(s);
  benchmark::DoNotOptimize(preprocess(name, in, s, {}, run));  // load the weights, pack them
  for (auto _ : st) benchmark::DoNotOptimize(preprocess(name, in, s, {}, run));
  st.SetLabel(std::string(name) + " " + file + " " + std::to_string(s) + "x" + std::to_string(s));
}

}  // namespace

BENCHMARK_CAPTURE(BM_Depth, da_small, "depth_anything_v2", "depth_anything_v2_vits.pth")
    ->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3)
    ->ReportAggregatesOnly(true);
BENCHMARK_CAPTURE(BM_Depth, da_base, "depth_anything_v2", "depth_anything_v2_vitb.pth")
    ->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3)
    ->ReportAggregatesOnly(true);
BENCHMARK_CAPTURE(BM_Depth, midas, "depth_midas", "dpt_hybrid-midas-501f0c75.pt")
    ->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3)
    ->ReportAggregatesOnly(true);

BENCHMARK_MAIN();
