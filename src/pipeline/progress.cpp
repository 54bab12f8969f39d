#include "pipeline/progress.h"

#include <unistd.h>

#include <cstdio>

namespace easel {

Progress::Progress(std::string label, int total, int enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled < 0 ? isatty(2) : enabled != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int done) {
  done_ = done;
  if (!enabled_) return;
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double per = done > 0 ? el / done : 0;
  const int width = 30;
  int fill = total_ > 0 ? done * width / total_ : 0;
  std::string bar(fill, '#');
  bar += std::string(width - fill, '.');
  std::fprintf(stderr, "\r%s %3d/%d [%s] %.2f s/it, ETA %.1f s ", label_.c_str(), done, total_, bar.c_str(), per,
               per * (total_ - done));
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) std::fprintf(stderr, "\n");
}

}  // namespace easel
