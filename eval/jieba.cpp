#include "eval/jieba.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace sr {

namespace {
constexpr double kMinFloat = -3.14e100;  // finalseg.MIN_FLOAT
constexpr char kStates[4] = {'B', 'M', 'E', 'S'};
int state_index(char c) {
  for (int i = 0; i < 4; ++i)
    if (kStates[i] == c) return i;
  return -1;
}
// finalseg.PrevStatus, in jieba's order.
const char* prev_status(int s) {
  static const char* p[4] = {"ES", "MB", "BM", "SE"};  // B, M, E, S
  return p[s];
}

bool is_han(char32_t c) { return c >= 0x4E00 && c <= 0x9FD5; }
bool is_ascii_alnum(char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
// re_han_default: [\u4E00-\u9FD5a-zA-Z0-9+#&\._%\-]
bool in_han_default(char32_t c) {
  return is_han(c) || is_ascii_alnum(c) || c == '+' || c == '#' || c == '&' || c == '.' || c == '_' || c == '%' ||
         c == '-';
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    fail(path, "cannot read jieba's data (install Debian's python3-jieba, as scripts/setup.sh does, or pass "
               "--jieba-dir / set SMOOTHREAD_JIEBA_DIR)");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A minimal reader for jieba's finalseg/prob_*.py: `P={...}` with nested dicts of quoted keys
// (plain or \uXXXX escapes) and float values.
struct PyDictReader {
  const std::string& s;
  const std::string& where;
  size_t i = 0;
  [[noreturn]] void bad(const std::string& what) { fail(where, what + " at byte " + std::to_string(i)); }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t' || s[i] == ',')) ++i;
  }
  py::ustr key() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) bad("expected a quoted key");
    char q = s[i++];
    std::string raw;
    while (i < s.size() && s[i] != q) {
      if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
        int n = s[i + 1] == 'u' ? 4 : 8;
        if (i + 2 + n > s.size()) bad("truncated escape");
        char32_t c = char32_t(std::strtoul(s.substr(i + 2, n).c_str(), nullptr, 16));
        raw += py::to_utf8(py::ustr(1, c));
        i += 2 + n;
      } else {
        raw += s[i++];
      }
    }
    ++i;
    ws();
    if (i >= s.size() || s[i] != ':') bad("expected ':'");
    ++i;
    return py::from_utf8(raw);
  }
  double number() {
    ws();
    const char* b = s.c_str() + i;
    char* e = nullptr;
    double v = std::strtod(b, &e);  // correctly rounded, as Python's float literals
    if (e == b) bad("expected a number");
    i += size_t(e - b);
    return v;
  }
  bool at(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void open_top() {
    size_t p = s.find("P=");
    if (p == std::string::npos) bad("expected 'P='");
    i = p + 2;
    if (!at('{')) bad("expected '{'");
  }
};
}  // namespace

std::string Jieba::default_dir() {
  const char* e = std::getenv("SMOOTHREAD_JIEBA_DIR");
  return e && *e ? e : "/usr/lib/python3/dist-packages/jieba";
}

const Jieba& Jieba::shared(const std::string& dir) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Jieba>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = cache[dir];
  if (!p) p = std::make_unique<Jieba>(dir);
  return *p;
}

Jieba::Jieba(const std::string& dir) {
  // dict.txt: "word freq tag" per line (jieba: line.strip().split(' ')[:2]; a later duplicate
  // overrides the frequency but every line adds to the total; prefixes enter with 0).
  const std::string dict_path = dir + "/dict.txt";
  std::string text = slurp(dict_path);
  freq_.reserve(600000);
  size_t pos = 0;
  int64_t lineno = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    size_t b = line.find_first_not_of(" \t\r\n\v\f"), e = line.find_last_not_of(" \t\r\n\v\f");
    line = b == std::string::npos ? "" : line.substr(b, e - b + 1);
    size_t sp = line.find(' ');
    std::string word = line.substr(0, sp), f = sp == std::string::npos ? "" : line.substr(sp + 1);
    f = f.substr(0, f.find(' '));
    char* end = nullptr;
    long long v = f.empty() ? 0 : std::strtoll(f.c_str(), &end, 10);
    if (f.empty() || *end)
      fail(dict_path + ":" + std::to_string(lineno), "invalid dictionary entry '" + line + "'");
    py::ustr w = py::from_utf8(word);
    freq_[w] = v;
    total_ += v;
    for (size_t k = 1; k < w.size(); ++k) freq_.emplace(w.substr(0, k), 0);  // no overwrite
  }
  log_total_ = std::log(double(total_));

  const std::string seg = dir + "/finalseg/";
  for (auto& s : trans_) s.fill(kMinFloat);
  {
    std::string path = seg + "prob_start.py", t = slurp(path);
    PyDictReader r{t, path};
    r.open_top();
    while (!r.at('}')) {
      py::ustr k = r.key();
      int si = k.size() == 1 ? state_index(char(k[0])) : -1;
      if (si < 0) r.bad("unknown state");
      start_[si] = r.number();
    }
  }
  for (const char* name : {"prob_trans.py", "prob_emit.py"}) {
    std::string path = seg + name, t = slurp(path);
    PyDictReader r{t, path};
    r.open_top();
    bool emit = std::string(name) == "prob_emit.py";
    while (!r.at('}')) {
      py::ustr k = r.key();
      int from = k.size() == 1 ? state_index(char(k[0])) : -1;
      if (from < 0) r.bad("unknown state");
      if (!r.at('{')) r.bad("expected '{'");
      while (!r.at('}')) {
        py::ustr k2 = r.key();
        double v = r.number();
        if (k2.size() != 1) r.bad("expected a one-character key");
        if (emit) {
          emit_[from][k2[0]] = v;
        } else {
          int to = state_index(char(k2[0]));
          if (to < 0) r.bad("unknown state");
          trans_[from][to] = v;
        }
      }
    }
  }
}

int64_t Jieba::freq(const py::ustr& w) const {
  auto it = freq_.find(w);
  return it == freq_.end() ? -1 : it->second;
}

std::vector<py::ustr> Jieba::cut(const py::ustr& s) const {
  std::vector<py::ustr> out;
  for (size_t i = 0; i < s.size();) {
    size_t b = i;
    if (in_han_default(s[i])) {
      while (i < s.size() && in_han_default(s[i])) ++i;
      cut_dag(s.substr(b, i - b), out);
      continue;
    }
    while (i < s.size() && !in_han_default(s[i])) ++i;
    // re_skip (\r\n|\s): separators are tokens, everything else one token per character.
    for (size_t k = b; k < i; ++k) {
      if (s[k] == '\r' && k + 1 < i && s[k + 1] == '\n') {
        out.push_back(U"\r\n");
        ++k;
      } else {
        out.emplace_back(1, s[k]);
      }
    }
  }
  return out;
}

std::vector<std::string> Jieba::cut_utf8(const std::string& s) const {
  std::vector<std::string> out;
  for (auto& w : cut(py::from_utf8(s))) out.push_back(py::to_utf8(w));
  return out;
}

void Jieba::cut_dag(const py::ustr& s, std::vector<py::ustr>& out) const {
  const size_t n = s.size();
  // DAG[k]: ends i (inclusive) of dictionary words starting at k; route from the right.
  std::vector<std::vector<size_t>> dag(n);
  for (size_t k = 0; k < n; ++k) {
    py::ustr frag(1, s[k]);
    for (size_t i = k; i < n;) {
      int64_t f = freq(frag);
      if (f < 0) break;
      if (f > 0) dag[k].push_back(i);
      ++i;
      if (i < n) frag.push_back(s[i]);
    }
    if (dag[k].empty()) dag[k].push_back(k);
  }
  std::vector<double> best(n + 1, 0.0);
  std::vector<size_t> end(n + 1, 0);
  for (size_t idx = n; idx-- > 0;) {
    bool first = true;
    for (size_t x : dag[idx]) {
      int64_t f = freq(s.substr(idx, x - idx + 1));
      double v = std::log(double(f > 0 ? f : 1)) - log_total_ + best[x + 1];
      // max over (value, x) tuples: larger value, ties to the larger x
      if (first || v > best[idx] || (v == best[idx] && x > end[idx])) best[idx] = v, end[idx] = x;
      first = false;
    }
  }
  py::ustr buf;
  auto flush = [&]() {
    if (buf.empty()) return;
    if (buf.size() == 1) {
      out.push_back(buf);
    } else if (freq(buf) <= 0) {  // `not FREQ.get(buf)`: absent or 0
      cut_hmm(buf, out);
    } else {
      for (char32_t c : buf) out.emplace_back(1, c);
    }
    buf.clear();
  };
  for (size_t x = 0; x < n;) {
    size_t y = end[x] + 1;
    if (y - x == 1) {
      buf.push_back(s[x]);
    } else {
      flush();
      out.push_back(s.substr(x, y - x));
    }
    x = y;
  }
  flush();
}

void Jieba::cut_hmm(const py::ustr& s, std::vector<py::ustr>& out) const {
  for (size_t i = 0; i < s.size();) {
    size_t b = i;
    if (is_han(s[i])) {
      while (i < s.size() && is_han(s[i])) ++i;
      viterbi(s.substr(b, i - b), out);
      continue;
    }
    // Non-han block: re_skip ([a-zA-Z0-9]+(?:\.\d+)?%?) matches and the text between them.
    while (i < s.size() && !is_han(s[i])) ++i;
    size_t k = b, gap = b;
    while (k < i) {
      if (!is_ascii_alnum(s[k])) {
        ++k;
        continue;
      }
      if (k > gap) out.push_back(s.substr(gap, k - gap));
      size_t m = k;
      while (m < i && is_ascii_alnum(s[m])) ++m;
      if (m + 1 < i && s[m] == '.' && py::is_digit(s[m + 1])) {
        ++m;
        while (m < i && py::is_digit(s[m])) ++m;
      }
      if (m < i && s[m] == '%') ++m;
      out.push_back(s.substr(k, m - k));
      k = gap = m;
    }
    if (i > gap) out.push_back(s.substr(gap, i - gap));
  }
}

void Jieba::viterbi(const py::ustr& obs, std::vector<py::ustr>& out) const {
  const size_t n = obs.size();
  auto em = [&](int st, char32_t c) {
    auto it = emit_[st].find(c);
    return it == emit_[st].end() ? kMinFloat : it->second;
  };
  std::vector<std::array<double, 4>> v(n);
  std::vector<std::array<int8_t, 4>> back(n);
  for (int y = 0; y < 4; ++y) v[0][y] = start_[y] + em(y, obs[0]);
  for (size_t t = 1; t < n; ++t) {
    for (int y = 0; y < 4; ++y) {
      double e = em(y, obs[t]);
      double bestp = 0;
      int bests = -1;
      for (const char* p = prev_status(y); *p; ++p) {
        int y0 = state_index(*p);
        double prob = v[t - 1][y0] + trans_[y0][y] + e;
        // max over (prob, state-letter) tuples
        if (bests < 0 || prob > bestp || (prob == bestp && kStates[y0] > kStates[bests])) bestp = prob, bests = y0;
      }
      v[t][y] = bestp;
      back[t][y] = int8_t(bests);
    }
  }
  const int E = 2, S = 3;
  int st = (v[n - 1][E] > v[n - 1][S] || (v[n - 1][E] == v[n - 1][S] && 'E' > 'S')) ? E : S;
  std::vector<int> pos(n);
  for (size_t t = n; t-- > 0;) {
    pos[t] = st;
    if (t) st = back[t][st];
  }
  size_t begin = 0, next = 0;
  for (size_t i = 0; i < n; ++i) {
    char p = kStates[pos[i]];
    if (p == 'B') {
      begin = i;
    } else if (p == 'E') {
      out.push_back(obs.substr(begin, i - begin + 1));
      next = i + 1;
    } else if (p == 'S') {
      out.emplace_back(1, obs[i]);
      next = i + 1;
    }
  }
  if (next < n) out.push_back(obs.substr(next));
}

}  // namespace sr
