// Progress bar on stderr for long CLI work (only when stderr is a terminal), and peak RSS.
#pragma once
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace sr::cli {

inline size_t peak_rss_bytes() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return size_t(ru.ru_maxrss) * 1024;
}

class Progress {
 public:
  explicit Progress(bool on) : on_(on && isatty(2)), t0_(std::chrono::steady_clock::now()) {}
  void update(const std::string& what, int64_t done, int64_t total, const std::string& extra = "") {
    if (!on_) return;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    double rate = s > 0 ? done / s : 0;
    double eta = rate > 0 ? (total - done) / rate : 0;
    int width = 24, fill = total > 0 ? int(width * double(done) / double(total)) : 0;
    std::fprintf(stderr, "\r%s [%s%s] %lld/%lld %s %.0f/s ETA %.0fs   ", what.c_str(), std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), (long long)done, (long long)total, extra.c_str(), rate, eta);
    std::fflush(stderr);
  }
  void done() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace sr::cli
