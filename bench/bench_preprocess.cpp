// ControlNet preprocessor timings (Google Benchmark): each classical preprocessor on a photo
// resized to SxS, processor resolution S (A1111's "Preprocessor resolution"), S = 512 and 1024.
//   build/bin/bench_preprocess            (tools/bench_preprocess.py times the reference on the same input)
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "io/image.h"
#include "preprocess/preprocess.h"

using namespace easel;
using easel::bench::photo;

namespace {

void BM_Preprocess(benchmark::State& st, const char* name) {
  const int s = (int)st.range(0);
  const Image& in = photo(s);
  for (auto _ : st) benchmark::DoNotOptimize(preprocess(name, in, s, {}, 0));
  st.SetLabel(std::string(name) + " " + std::to_string(s) + "x" + std::to_string(s));
}

}  // namespace

#define EASEL_PP(name) \
  BENCHMARK_CAPTURE(BM_Preprocess, name, #name)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
EASEL_PP(canny)
EASEL_PP(blur)
EASEL_PP(invert)
EASEL_PP(grayscale)
EASEL_PP(gradient)
EASEL_PP(threshold)
EASEL_PP(scribble_xdog)
EASEL_PP(lineart_standard)
EASEL_PP(shuffle)
EASEL_PP(color)

BENCHMARK_MAIN();
