#include "core/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"

namespace sr {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::string data(size_t(f.tellg()), '\0');  // one allocation, no intermediate copy
  f.seekg(0);
  if (!f.read(data.data(), std::streamsize(data.size()))) fail(path, "read failed");
  return data;
}

// Creates the directory an output file goes into when it does not exist yet (`--trace
// runs/t.jsonl` in a fresh checkout, where runs/ is not there), so a finished run is not lost to a
// missing folder.
static void make_parent_dirs(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty() || std::filesystem::is_directory(parent)) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) fail(path, "cannot create its directory " + parent.string() + ": " + ec.message());
}

void write_file_atomic(const std::string& path, const std::string& data) {
  make_parent_dirs(path);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail(tmp, std::string("cannot create: ") + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(tmp, std::string("write failed: ") + std::strerror(e));
    }
    done += size_t(w);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail(path, std::string("rename failed: ") + std::strerror(e));
  }
}

json load_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
}

void for_each_jsonl(const std::string& path, const std::function<void(json& obj, const std::string& where)>& fn,
                    int64_t* skipped) {
  std::ifstream f(path);
  if (!f) fail(path, "cannot open");
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = path + ":" + std::to_string(lineno);
    try {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::parse_error& e) {
        fail(where, std::string("invalid JSON: ") + e.what());
      }
      if (!j.is_object()) fail(where, "expected a JSON object");
      fn(j, where);
    } catch (const Error&) {
      if (!skipped) throw;
      ++*skipped;
    }
  }
}

std::vector<json> resume_jsonl(const std::string& path) {
  std::vector<json> kept;
  if (!path_exists(path)) return kept;
  std::ifstream f(path);
  std::string line, text;
  while (std::getline(f, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      kept.push_back(json::parse(line));
      text += line + "\n";
    } catch (const json::parse_error&) {
      break;  // torn write from an interrupted run: everything after it is redone
    }
  }
  write_file_atomic(path, text);
  return kept;
}

JsonlAppender::JsonlAppender(const std::string& path) : path_(path) {
  make_parent_dirs(path);
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) fail(path, std::string("cannot open for appending: ") + std::strerror(errno));
}
JsonlAppender::~JsonlAppender() {
  if (f_) std::fclose(f_);
}
void JsonlAppender::append(const json& record) {
  std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0) fail(path_, "write failed");
  fsync(fileno(f_));
}

bool path_exists(const std::string& path) { return std::filesystem::exists(path); }
bool is_directory(const std::string& path) { return std::filesystem::is_directory(path); }
void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) fail(path, "cannot create directory: " + ec.message());
}
std::string join_path(const std::string& a, const std::string& b) { return (std::filesystem::path(a) / b).string(); }

static const json& field(const json& j, const std::string& key, const std::string& where) {
  if (!j.is_object()) fail(where, "expected a JSON object");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail(where, "missing field '" + key + "'");
  return *it;
}

static std::string fw(const std::string& where, const std::string& key) { return where + ": field '" + key + "'"; }

int64_t json_int(const json& j, const std::string& key, const std::string& where) {
  const json& v = field(j, key, where);
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_float() && v.get<double>() == double(int64_t(v.get<double>()))) return int64_t(v.get<double>());
  fail(fw(where, key), "expected an integer, got " + v.dump());
}
int64_t json_int_or(const json& j, const std::string& key, int64_t dflt, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return json_int(j, key, where);
}
double json_num(const json& j, const std::string& key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_number()) fail(fw(where, key), "expected a number, got " + v.dump());
  return v.get<double>();
}
double json_num_or(const json& j, const std::string& key, double dflt, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return json_num(j, key, where);
}
bool json_bool_or(const json& j, const std::string& key, bool dflt, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean()) fail(fw(where, key), "expected true/false, got " + j[key].dump());
  return j[key].get<bool>();
}
std::string json_str(const json& j, const std::string& key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_string()) fail(fw(where, key), "expected a string, got " + v.dump());
  return v.get<std::string>();
}
std::string json_str_or(const json& j, const std::string& key, const std::string& dflt, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  return json_str(j, key, where);
}

std::vector<std::string> json_str_list(const json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_array()) fail(where + ": field '" + key + "'", "missing (expected a list of strings)");
  std::vector<std::string> out;
  for (auto& a : j[key]) {
    if (!a.is_string()) fail(where + ": field '" + key + "'", "expected a list of strings");
    out.push_back(a.get<std::string>());
  }
  return out;
}

}  // namespace sr
