// Terminal progress bar on stderr: "sampling  12/20 [#######.....] 1.23 s/it, ETA 9.8 s",
// redrawn in place with '\r'. Draws only when stderr is a terminal (or when forced), so logs
// and pipes stay clean. Library users who want their own display hook a ProgressCallback.
#pragma once
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

namespace easel {

// Called after each step (1-based) of `total`.
using ProgressCallback = std::function<void(int step, int total)>;

class Progress {
 public:
  // enabled: -1 = when stderr is a terminal, 0 = never, 1 = always. `out` defaults to stderr.
  Progress(std::string label, int total, int enabled = -1, std::FILE* out = nullptr);
  ~Progress();  // finishes the line if update() drew something
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void set_total(int total) { total_ = total; }
  void update(int done);
  void finish();
  // A callback that updates this bar (set_total + update); the bar must outlive it.
  ProgressCallback callback();
  double elapsed_s() const;

  // One line of the bar, without '\r': for tests and custom displays.
  static std::string format(const std::string& label, int done, int total, double elapsed_s, int width = 30);

 private:
  std::string label_;
  int total_, done_ = 0;
  bool enabled_, drawn_ = false, finished_ = false;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
  size_t last_len_ = 0;
};

}  // namespace easel
