// Terminal progress bar on stderr: "sampling  12/20 [#######.....] 1.23 s/it, ETA 9.8 s".
// Draws only when stderr is a terminal (or when forced), so logs stay clean.
#pragma once
#include <chrono>
#include <string>

namespace easel {

class Progress {
 public:
  Progress(std::string label, int total, int enabled = -1 /* -1: when stderr is a tty */);
  void set_total(int total) { total_ = total; }
  void update(int done);
  void finish();

 private:
  std::string label_;
  int total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace easel
