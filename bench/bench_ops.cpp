// Op microbenchmarks (Google Benchmark) at SD1.5 512x512 CFG shapes (batch 2), 2 threads by
// default (EASEL_THREADS overrides). Gives the machine's measured matmul peak for
// BENCHMARKS.md: f32 via OpenBLAS (ops::ref::linear) and oneDNN, bf16 via oneDNN.
//   build/bin/bench_ops --benchmark_filter=Matmul
// GFLOP/s (2*M*N*K per matmul) are per wall-clock second (UseRealTime): run on a quiet
// machine. On a busy one, EASEL_THREADS=1 and the CPU column give per-core numbers.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>

#include "ops/ops.h"

using namespace easel;

namespace {

Tensor randt(const Shape& s, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = u(g);
  return t;
}

void setup(benchmark::State& st, int mode) {
  const char* th = std::getenv("EASEL_THREADS");
  ops::set_num_threads(th ? std::atoi(th) : 2);
  ops::set_compute_dtype(mode == 2 ? DType::BF16 : DType::F32);
  st.SetLabel(mode == 0 ? "ref (OpenBLAS/loops) f32" : mode == 1 ? "oneDNN f32" : "oneDNN bf16");
}

void flops(benchmark::State& st, double f) {
  st.counters["GFLOP/s"] = benchmark::Counter(f * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// mode: 0 = reference, 1 = fast f32, 2 = fast bf16.
void BM_Matmul(benchmark::State& st) {
  int64_t M = st.range(1), K = st.range(2), N = st.range(3);
  setup(st, (int)st.range(0));
  Tensor x = randt({M, K}, 1), w = randt({N, K}, 2);
  for (auto _ : st) {
    Tensor y = st.range(0) == 0 ? ops::ref::linear(x, w, Tensor()) : ops::linear(x, w, Tensor());
    benchmark::DoNotOptimize(y.raw());
  }
  flops(st, 2.0 * M * N * K);
}
// Peak (2048^3) and SD1.5 shapes: attention projections at 64x64 (8192 tokens, 320),
// GEGLU in (320 -> 2560), FF out (1280 -> 320), 16x16 projections (512 tokens, 1280).
BENCHMARK(BM_Matmul)
    ->ArgNames({"mode", "M", "K", "N"})
    ->ArgsProduct({{0, 1, 2}, {2048}, {2048}, {2048}})
    ->Args({0, 8192, 320, 320})->Args({1, 8192, 320, 320})->Args({2, 8192, 320, 320})
    ->Args({0, 8192, 320, 2560})->Args({1, 8192, 320, 2560})->Args({2, 8192, 320, 2560})
    ->Args({0, 8192, 1280, 320})->Args({1, 8192, 1280, 320})->Args({2, 8192, 1280, 320})
    ->Args({0, 512, 1280, 1280})->Args({1, 512, 1280, 1280})->Args({2, 512, 1280, 1280})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Conv2d(benchmark::State& st) {
  int64_t C = st.range(1), H = st.range(2), O = st.range(3), k = st.range(4);
  setup(st, (int)st.range(0));
  Tensor x = randt({2, C, H, H}, 3), w = randt({O, C, k, k}, 4), b = randt({O}, 5);
  for (auto _ : st) {
    Tensor y = st.range(0) == 0 ? ops::ref::conv2d(x, w, b, 1, k / 2) : ops::conv2d(x, w, b, 1, k / 2);
    benchmark::DoNotOptimize(y.raw());
  }
  flops(st, 2.0 * 2 * O * H * H * C * k * k);
}
// UNet ResBlock convs at 64x64 (320 ch), 32x32 (640), 16x16 (1280), 8x8 (1280); 1x1 shortcut.
BENCHMARK(BM_Conv2d)
    ->ArgNames({"mode", "C", "HW", "O", "k"})
    ->ArgsProduct({{0, 1, 2}, {320}, {64}, {320}, {3}})
    ->ArgsProduct({{1, 2}, {640}, {32}, {640}, {3}})
    ->ArgsProduct({{1, 2}, {1280}, {16}, {1280}, {3}})
    ->ArgsProduct({{1, 2}, {1280}, {8}, {1280}, {3}})
    ->ArgsProduct({{1, 2}, {960}, {64}, {320}, {1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Attention(benchmark::State& st) {
  int64_t L = st.range(1), Lk = st.range(2), C = st.range(3), heads = 8;
  setup(st, (int)st.range(0));
  Tensor q = randt({2, L, C}, 6), k = randt({2, Lk, C}, 7), v = randt({2, Lk, C}, 8);
  for (auto _ : st) {
    Tensor o = st.range(0) == 0 ? ops::ref::attention(q, k, v, (int)heads) : ops::attention(q, k, v, (int)heads);
    benchmark::DoNotOptimize(o.raw());
  }
  flops(st, 2.0 * 2 * 2 * L * Lk * C);  // QK^T and PV, batch 2
}
// Self-attention at 64x64 (4096 tokens, 8 heads of 40), 32x32 (8 x 80); cross-attention (77).
BENCHMARK(BM_Attention)
    ->ArgNames({"mode", "L", "Lk", "C"})
    ->ArgsProduct({{1, 2}, {4096}, {4096}, {320}})
    ->ArgsProduct({{0, 1, 2}, {1024}, {1024}, {640}})
    ->ArgsProduct({{1, 2}, {4096}, {77}, {320}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_GroupNormSilu(benchmark::State& st) {
  setup(st, (int)st.range(0));
  int64_t C = st.range(1), H = st.range(2);
  Tensor x = randt({2, C, H, H}, 9), g = randt({C}, 10), b = randt({C}, 11);
  for (auto _ : st) {
    Tensor y = st.range(0) == 0 ? ops::ref::group_norm(x, 32, g, b, 1e-5f, true)
                                : ops::group_norm(x, 32, g, b, 1e-5f, true);
    benchmark::DoNotOptimize(y.raw());
  }
  st.counters["GB/s"] = benchmark::Counter(2.0 * x.nbytes() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_GroupNormSilu)
    ->ArgNames({"mode", "C", "HW"})
    ->ArgsProduct({{0, 1}, {320}, {64}})
    ->ArgsProduct({{0, 1}, {1280}, {16}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Elementwise activations on 16M floats (mode 0 = reference erf GELU, 1 = gelu, 2 = quick_gelu, 3 = silu).
void BM_Activation(benchmark::State& st) {
  setup(st, 1);
  Tensor x = randt({16 << 20}, 12);
  for (auto _ : st) {
    Tensor y = st.range(0) == 0 ? ops::ref::gelu(x) : st.range(0) == 1 ? ops::gelu(x)
               : st.range(0) == 2 ? ops::quick_gelu(x) : ops::silu(x);
    benchmark::DoNotOptimize(y.raw());
  }
  st.counters["GB/s"] = benchmark::Counter(2.0 * x.nbytes() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Activation)->ArgNames({"op"})->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
