// Chinese word segmentation exactly as Python jieba 0.42.1's default `jieba.cut(s, cut_all=False)`
// (accurate mode with HMM), which LongBench's qa_f1_zh / rouge_zh scores depend on:
//   1. split into runs of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-] ("han" blocks) and everything else;
//      outside han blocks every character is its own token ("\r\n" stays one token);
//   2. han block: prefix-dictionary DAG, maximum log-probability route (right to left, ties to the
//      longer word), runs of single characters that are not a dictionary word go to
//   3. the HMM (BMES Viterbi with jieba's start/transition/emission log-probabilities) over
//      [\u4E00-\u9FD5]+ runs; letters/digits ([a-zA-Z0-9]+(\.\d+)?%?) and the rest stay whole.
// Data: jieba's own dict.txt and finalseg/prob_{start,trans,emit}.py, read from Debian's
// python3-jieba (scripts/setup.sh installs it) or from a directory given by the user.
#pragma once
#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "eval/pystr.h"

namespace sr {

class Jieba {
 public:
  // dir: jieba's package directory (holds dict.txt and finalseg/). Throws naming the missing file.
  explicit Jieba(const std::string& dir);
  // The directory used by default: $SMOOTHREAD_JIEBA_DIR, else /usr/lib/python3/dist-packages/jieba.
  static std::string default_dir();
  // One loaded instance per directory, shared (loading takes a fraction of a second).
  static const Jieba& shared(const std::string& dir = default_dir());

  std::vector<py::ustr> cut(const py::ustr& sentence) const;
  std::vector<std::string> cut_utf8(const std::string& sentence) const;

 private:
  void cut_dag(const py::ustr& block, std::vector<py::ustr>& out) const;  // one han block
  void cut_hmm(const py::ustr& buf, std::vector<py::ustr>& out) const;    // finalseg.cut
  void viterbi(const py::ustr& run, std::vector<py::ustr>& out) const;    // one [\u4E00-\u9FD5]+ run
  int64_t freq(const py::ustr& w) const;                                  // -1: not in FREQ at all

  std::unordered_map<py::ustr, int64_t, py::UHash> freq_;  // words and their prefixes (prefixes: 0)
  int64_t total_ = 0;
  double log_total_ = 0;
  // HMM, states in jieba's order B M E S.
  std::array<double, 4> start_{};
  std::array<std::array<double, 4>, 4> trans_{};  // [from][to]; missing = -3.14e100
  std::array<std::unordered_map<char32_t, double>, 4> emit_;
};

}  // namespace sr
