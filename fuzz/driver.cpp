// Standalone fuzz driver: replays a seed corpus through LLVMFuzzerTestOneInput, then feeds it
// seeded random mutations of the corpus until the time budget ends. No clang needed; with clang
// build the targets with -fsanitize=fuzzer -DEASEL_LIBFUZZER instead (libFuzzer brings its own main).
// Coverage-guided alternative (clang): compile the io sources with
//   clang++ -fsanitize=fuzzer-no-link,address,undefined, the target with -DEASEL_LIBFUZZER, link
//   with -fsanitize=fuzzer,address,undefined, and run: fuzz_X -max_total_time=60 CORPUS_COPY/
// Usage (libFuzzer-like flags; unknown flags are ignored):
//   fuzz_X [-seconds=N] [-runs=N] [-seed=N] [-max_len=N] [-timeout=N] CORPUS_DIR_OR_FILE...
// Any crash, sanitizer report, uncaught exception or input slower than -timeout seconds stops
// the run; the input is written to ./crash-<seed>-<run> (replay it: fuzz_X crash-...).
//   https://llvm.org/docs/LibFuzzer.html
#ifndef EASEL_LIBFUZZER
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" void __sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));

namespace {

using Bytes = std::vector<uint8_t>;

// The input being run, saved by the crash handlers (async-signal-safe writes only).
const uint8_t* g_cur = nullptr;
size_t g_cur_size = 0;
char g_crash_path[256] = "crash-input";

void save_current() {
  if (!g_cur && g_cur_size) return;
  int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t off = 0;
  while (off < g_cur_size) {
    ssize_t w = ::write(fd, g_cur + off, g_cur_size - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  ::close(fd);
  const char msg[] = "\n==fuzz driver== crashing input written to ";
  (void)!::write(2, msg, sizeof msg - 1);
  (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
  (void)!::write(2, "\n", 1);
}

void on_signal(int sig) {
  if (sig == SIGALRM) {
    const char msg[] = "\n==fuzz driver== input exceeded the -timeout\n";
    (void)!::write(2, msg, sizeof msg - 1);
  }
  save_current();
  signal(sig, SIG_DFL);
  raise(sig == SIGALRM ? SIGABRT : sig);
}

void on_terminate() {
  const char msg[] = "\n==fuzz driver== uncaught exception (not easel::Error) escaped the target\n";
  (void)!::write(2, msg, sizeof msg - 1);
  save_current();
  std::abort();
}

Bytes read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs one input from an exactly-sized heap copy, so a sanitizer sees any read past its end.
void run_one(const Bytes& in, unsigned timeout_s) {
  uint8_t* buf = in.empty() ? nullptr : new uint8_t[in.size()];
  if (buf) std::memcpy(buf, in.data(), in.size());
  g_cur = buf;
  g_cur_size = in.size();
  if (timeout_s) alarm(timeout_s);
  LLVMFuzzerTestOneInput(buf, in.size());
  if (timeout_s) alarm(0);
  g_cur = nullptr;
  g_cur_size = 0;
  delete[] buf;
}

class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len) : rng_(seed), max_len_(max_len) {}

  Bytes mutate(const std::vector<Bytes>& corpus) {
    Bytes b = corpus[pick(corpus.size())];
    int n = pick(2) ? 1 : 2 + (int)pick(4);  // mostly one edit: most inputs stay near-valid
    for (int k = 0; k < n; ++k) step(b, corpus);
    if (b.size() > max_len_) b.resize(max_len_);
    return b;
  }

 private:
  std::mt19937_64 rng_;
  size_t max_len_;

  size_t pick(size_t n) { return n ? (size_t)(rng_() % n) : 0; }

  uint64_t interesting() {
    static const uint64_t v[] = {0, 1, 2, 7, 8, 15, 16, 127, 128, 255, 256, 0x7fff, 0x8000, 0xffff,
                                 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull, 1ull << 40,
                                 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};
    uint64_t x = v[pick(sizeof v / sizeof v[0])];
    return pick(4) == 0 ? x + (uint64_t)pick(3) - 1 : x;
  }

  void step(Bytes& b, const std::vector<Bytes>& corpus) {
    switch (pick(12)) {
      case 0:  // flip a bit
        if (!b.empty()) b[pick(b.size())] ^= (uint8_t)(1u << pick(8));
        break;
      case 1:  // set a byte to a random / boundary value
        if (!b.empty()) b[pick(b.size())] = pick(2) ? (uint8_t)rng_() : (uint8_t)interesting();
        break;
      case 2:  // truncate
        b.resize(pick(b.size() + 1));
        break;
      case 3: {  // insert random bytes
        size_t at = pick(b.size() + 1), n = 1 + pick(pick(2) ? 4 : 64);
        Bytes ins(n);
        for (auto& c : ins) c = (uint8_t)rng_();
        b.insert(b.begin() + (ptrdiff_t)at, ins.begin(), ins.end());
        break;
      }
      case 4: {  // delete a range
        if (b.empty()) break;
        size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(b.size() - at, 64));
        b.erase(b.begin() + (ptrdiff_t)at, b.begin() + (ptrdiff_t)(at + n));
        break;
      }
      case 5: {  // duplicate a range
        if (b.empty()) break;
        size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(b.size() - at, 64));
        Bytes r(b.begin() + (ptrdiff_t)at, b.begin() + (ptrdiff_t)(at + n));
        b.insert(b.begin() + (ptrdiff_t)pick(b.size() + 1), r.begin(), r.end());
        break;
      }
      case 6: {  // the 8-byte little-endian length at the start (safetensors header size)
        if (b.size() < 8) break;
        uint64_t len;
        std::memcpy(&len, b.data(), 8);
        switch (pick(3)) {
          case 0: len = interesting(); break;
          case 1: len += (uint64_t)pick(17) - 8; break;
          default: len = b.size() - 8 + pick(3) - 1; break;
        }
        std::memcpy(b.data(), &len, 8);
        break;
      }
      case 7: {  // replace a decimal number (JSON offsets/shapes) with another
        std::vector<size_t> starts;
        for (size_t i = 0; i < b.size(); ++i)
          if (b[i] >= '0' && b[i] <= '9' && (i == 0 || b[i - 1] < '0' || b[i - 1] > '9')) starts.push_back(i);
        if (starts.empty()) break;
        size_t s = starts[pick(starts.size())], e = s;
        while (e < b.size() && b[e] >= '0' && b[e] <= '9') ++e;
        std::string num;
        switch (pick(4)) {
          case 0: num = std::to_string(interesting()); break;
          case 1: num = "-" + std::to_string(pick(100)); break;
          case 2: num = std::to_string(pick(300)); break;
          default: num = std::to_string(pick(100)) + ".5"; break;
        }
        b.erase(b.begin() + (ptrdiff_t)s, b.begin() + (ptrdiff_t)e);
        b.insert(b.begin() + (ptrdiff_t)s, num.begin(), num.end());
        break;
      }
      case 8: {  // overwrite 1/2/4/8 bytes with a boundary integer (pickle args, zip fields)
        size_t w = (size_t)1 << pick(4);
        if (b.size() < w) break;
        uint64_t v = interesting();
        std::memcpy(b.data() + pick(b.size() - w + 1), &v, w);
        break;
      }
      case 9: {  // splice a piece of another input
        const Bytes& o = corpus[pick(corpus.size())];
        if (o.empty()) break;
        size_t at = pick(o.size()), n = 1 + pick(std::min<size_t>(o.size() - at, 256));
        size_t to = pick(b.size() + 1);
        b.insert(b.begin() + (ptrdiff_t)to, o.begin() + (ptrdiff_t)at, o.begin() + (ptrdiff_t)(at + n));
        break;
      }
      case 10: {  // insert or overwrite with a pickle opcode (torch checkpoints' data.pkl)
        static const uint8_t ops[] = {'(', ')', ']', '}', 't', 'l', 'd', 'a', 'e', 's', 'u', 'R', 'b', 'Q', 'q',
                                      'h', 'j', 'r', 'K', 'M', 'J', 'N', '.', '0', '1', '2', 'X', 'C', 'c',
                                      0x80, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x93, 0x94, 0x95, 0x81};
        uint8_t op = ops[pick(sizeof ops)];
        if (!b.empty() && pick(2)) b[pick(b.size())] = op;
        else b.insert(b.begin() + (ptrdiff_t)pick(b.size() + 1), op);
        break;
      }
      default: {  // swap two bytes
        if (b.size() < 2) break;
        std::swap(b[pick(b.size())], b[pick(b.size())]);
        break;
      }
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  uint64_t runs = ~0ull, seed = 1;
  size_t max_len = 0;
  unsigned timeout_s = 20;
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* flag) -> const char* {
      size_t n = std::strlen(flag);
      return a.compare(0, n, flag) == 0 ? a.c_str() + n : nullptr;
    };
    if (const char* v = val("-seconds=")) seconds = std::atof(v);
    else if (const char* v = val("-max_total_time=")) seconds = std::atof(v);
    else if (const char* v = val("-runs=")) runs = std::strtoull(v, nullptr, 10);
    else if (const char* v = val("-seed=")) seed = std::strtoull(v, nullptr, 10);
    else if (const char* v = val("-max_len=")) max_len = std::strtoull(v, nullptr, 10);
    else if (const char* v = val("-timeout=")) timeout_s = (unsigned)std::strtoul(v, nullptr, 10);
    else if (a.size() > 1 && a[0] == '-') std::fprintf(stderr, "fuzz driver: ignoring flag %s\n", a.c_str());
    else inputs.emplace_back(a);
  }

  std::vector<Bytes> corpus;
  for (auto& p : inputs) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      std::vector<std::filesystem::path> files;
      for (auto& e : std::filesystem::directory_iterator(p, ec))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());  // deterministic order for a given seed
      for (auto& f : files) corpus.push_back(read_file(f));
    } else if (std::filesystem::is_regular_file(p, ec)) {
      corpus.push_back(read_file(p));
    } else {
      std::fprintf(stderr, "fuzz driver: no such corpus file or folder: %s\n", p.c_str());
      return 2;
    }
  }
  if (corpus.empty()) corpus.push_back({});
  if (!max_len) {
    for (auto& c : corpus) max_len = std::max(max_len, c.size());
    max_len = std::max<size_t>(2 * max_len, 4096);
  }

  std::snprintf(g_crash_path, sizeof g_crash_path, "crash-input");
  // Under a sanitizer its own SEGV handler prints the report, and its death callback saves the
  // input; without one, our handlers save it.
  if (__sanitizer_set_death_callback) {
    __sanitizer_set_death_callback(save_current);
    for (int s : {SIGABRT, SIGALRM}) signal(s, on_signal);
  } else {
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM}) signal(s, on_signal);
  }
  std::set_terminate(on_terminate);

  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (auto& c : corpus) run_one(c, timeout_s);
  std::fprintf(stderr, "fuzz driver: replayed %zu corpus inputs in %.2fs\n", corpus.size(), elapsed());

  Mutator m(seed, max_len);
  uint64_t n = 0;
  for (; n < runs && elapsed() < seconds; ++n) {
    Bytes b = m.mutate(corpus);
    std::snprintf(g_crash_path, sizeof g_crash_path, "crash-%llu-%llu", (unsigned long long)seed,
                  (unsigned long long)n);
    run_one(b, timeout_s);
  }
  std::fprintf(stderr, "fuzz driver: %llu mutated inputs in %.1fs (seed %llu), no crash\n", (unsigned long long)n,
               elapsed(), (unsigned long long)seed);
  return 0;
}
#endif  // EASEL_LIBFUZZER
