// OpenPose preprocessor timings (Google Benchmark) with the random full-size weights written by
// tools/bench_openpose.py (which times controlnet_aux 0.0.10 on the same files and inputs): the chelsea photo
// resized to SxS, processor resolution S, S = 512 and 1024 (openpose: body; openpose_full: body + hands + face),
// and the hand / face estimators alone on a 128x128 crop.
//   python tools/bench_openpose.py --dir DIR && EASEL_BENCH_OPENPOSE=DIR build/bin/bench_openpose
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>

#include "bench_util.h"
#include "io/image.h"
#include "preprocess/openpose.h"
#include "preprocess/preprocess.h"

using namespace easel;
using easel::bench::photo;

namespace {

std::string dir() {
  const char* d = std::getenv("EASEL_BENCH_OPENPOSE");
  return d ? d : "";
}

void BM_OpenPose(benchmark::State& st, const char* name) {
  if (dir().empty()) {
    st.SkipWithError("set EASEL_BENCH_OPENPOSE (tools/bench_openpose.py --dir DIR writes the models)");
    return;
  }
  const int s = (int)st.range(0);
  PreprocessRun run;
  run.model_path = dir();
  std::string json;
  run.json_out = &json;
  const Image& in = photo(s);
  benchmark::DoNotOptimize(preprocess(name, in, s, {}, run));  // load the weights, pack them
  for (auto _ : st) benchmark::DoNotOptimize(preprocess(name, in, s, {}, run));
  st.SetLabel(std::string(name) + " " + std::to_string(s) + "x" + std::to_string(s));
}

// Hand / face estimators on a 128x128 BGR crop (the photo resized), as the Python script's.
void BM_Part(benchmark::State& st, bool hand) {
  if (dir().empty()) {
    st.SkipWithError("set EASEL_BENCH_OPENPOSE");
    return;
  }
  const auto nets = pp::openpose::load_nets(dir() + "/body_pose_model.pth", dir() + "/hand_pose_model.pth",
                                            dir() + "/facenet.pth");
  Image crop = photo(128);
  for (size_t i = 0; i + 2 < crop.pixels.size(); i += 3) std::swap(crop.pixels[i], crop.pixels[i + 2]);
  auto run = [&] {
    if (hand) benchmark::DoNotOptimize(pp::openpose::hand_estimate(crop, nets));
    else benchmark::DoNotOptimize(pp::openpose::face_estimate(crop, nets));
  };
  run();
  for (auto _ : st) run();
  st.SetLabel(hand ? "hand_estimate 128x128" : "face_estimate 128x128");
}

}  // namespace

BENCHMARK_CAPTURE(BM_Part, hand, true)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_CAPTURE(BM_Part, face, false)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_CAPTURE(BM_OpenPose, openpose, "openpose")
    ->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_CAPTURE(BM_OpenPose, openpose_full, "openpose_full")
    ->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

BENCHMARK_MAIN();
