#include "pipeline/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace easel {

Progress::Progress(std::string label, int total, int enabled, std::FILE* out)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled < 0 ? isatty(fileno(out ? out : stderr)) != 0 : enabled != 0),
      out_(out ? out : stderr),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() {
  if (drawn_) finish();
}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format(const std::string& label, int done, int total, double el, int width) {
  int shown = std::max(done, 0);
  int fill = total > 0 ? (int)((int64_t)std::min(shown, total) * width / total) : 0;
  std::string bar(fill, '#');
  bar += std::string(width - fill, '.');
  char rate[64] = "";
  if (shown > 0 && el > 0) {
    double per = el / shown;
    // tqdm style: seconds per step when slow, steps per second when fast.
    if (per >= 1.0) std::snprintf(rate, sizeof rate, " %.2f s/it", per);
    else std::snprintf(rate, sizeof rate, " %.2f it/s", 1.0 / per);
    double left = per * std::max(total - shown, 0);
    char tail[48];
    if (shown >= total) std::snprintf(tail, sizeof tail, ", %.1f s", el);
    else std::snprintf(tail, sizeof tail, ", ETA %.1f s", left);
    std::strncat(rate, tail, sizeof rate - std::strlen(rate) - 1);
  }
  char head[64];
  int digits = std::max(1, (int)std::to_string(std::max(total, 0)).size());
  std::snprintf(head, sizeof head, " %*d/%d [", digits + 1, shown, total);
  return label + head + bar + "]" + rate;
}

void Progress::update(int done) {
  done_ = done;
  if (!enabled_ || finished_) return;
  std::string line = format(label_, done, total_, elapsed_s());
  size_t len = line.size();
  if (len < last_len_) line += std::string(last_len_ - len, ' ');  // erase a longer previous line
  last_len_ = len;
  std::fprintf(out_, "\r%s", line.c_str());
  std::fflush(out_);
  drawn_ = true;
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_ && drawn_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

ProgressCallback Progress::callback() {
  return [this](int step, int total) {
    set_total(total);
    update(step);
  };
}

}  // namespace easel
