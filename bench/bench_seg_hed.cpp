// Neural preprocessor timings (Google Benchmark): seg_upernet (UperNet-ConvNeXt-small) and softedge_hed (full HED)
// with the random full-size weights written by tools/bench_seg_hed.py (which times the reference on the same files
// and inputs): the chelsea photo resized to SxS, processor resolution S, S = 512 and 1024.
//   python tools/bench_seg_hed.py --dir DIR && EASEL_BENCH_SEG_HED=DIR build/bin/bench_seg_hed
// seg_upernet/512: the default image processor (network at 512x512 whatever S); seg_upernet/S: a
// preprocessor_config.json with size S (network at SxS).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>

#include "bench_util.h"
#include "io/image.h"
#include "preprocess/preprocess.h"

using namespace easel;
using easel::bench::photo;

namespace {

std::string dir() {
  const char* d = std::getenv("EASEL_BENCH_SEG_HED");
  return d ? d : "";
}

// range(0): S; range(1): processor size (seg only; 0 for HED)
void BM_Neural(benchmark::State& st, const char* name) {
  if (dir().empty()) {
    st.SkipWithError("set EASEL_BENCH_SEG_HED (tools/bench_seg_hed.py --dir DIR writes the models)");
    return;
  }
  const int s = (int)st.range(0), proc = (int)st.range(1);
  PreprocessRun run;
  run.model_path = proc ? dir() + "/upernet" + std::to_string(proc) : dir() + "/ControlNetHED.pth";
  const Image& in = photo(s);
  benchmark::DoNotOptimize(preprocess(name, in, s, {}, run));  // load the weights, pack them
  for (auto _ : st) benchmark::DoNotOptimize(preprocess(name, in, s, {}, run));
  st.SetLabel(std::string(name) + " " + std::to_string(s) + "x" + std::to_string(s) +
              (proc ? " processor " + std::to_string(proc) : ""));
}

}  // namespace

BENCHMARK_CAPTURE(BM_Neural, seg_upernet, "seg_upernet")
    ->Args({512, 512})->Args({1024, 512})->Args({1024, 1024})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3)->ReportAggregatesOnly(true);
BENCHMARK_CAPTURE(BM_Neural, softedge_hed, "softedge_hed")
    ->Args({512, 0})->Args({1024, 0})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3)->ReportAggregatesOnly(true);

BENCHMARK_MAIN();
