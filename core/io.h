// File helpers: whole-file read, atomic write (temp file + fsync + rename), JSON load with
// errors that name the file (and line for JSONL), typed JSON field access naming the field.
#pragma once
#include <nlohmann/json.hpp>
#include <functional>
#include <cstdio>
#include <string>
#include <vector>

namespace sr {

using json = nlohmann::json;

std::string read_file(const std::string& path);
// Writes `data` to `path` atomically: readers see the old file or the new one, never a mix. The
// folder it goes into is created when missing (as for JsonlAppender).
void write_file_atomic(const std::string& path, const std::string& data);
json load_json_file(const std::string& path);
// Calls fn(object, where) for every non-blank line of a JSONL file, `where` = "path:line".
// Lines that are not JSON objects are errors naming path:line. With `skipped` non-null, bad lines
// (and lines for which fn throws sr::Error) are counted there and skipped instead (--skip-bad).
void for_each_jsonl(const std::string& path, const std::function<void(json& obj, const std::string& where)>& fn,
                    int64_t* skipped = nullptr);
// Resumable JSONL output (prediction files): keeps the complete lines already in `path`, drops a
// torn last line from an interrupted run (rewriting the file atomically) and returns the kept
// records. Missing file: empty.
std::vector<json> resume_jsonl(const std::string& path);
// Appends one JSON record per line, flushed and fsync'ed, so a crash loses at most the line in flight.
class JsonlAppender {
 public:
  explicit JsonlAppender(const std::string& path);
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;
  void append(const json& record);

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
void make_dirs(const std::string& path);
std::string join_path(const std::string& a, const std::string& b);

// Typed accessors: `where` names the file; errors say "<file>: field 'x': expected integer".
int64_t json_int(const json& j, const std::string& key, const std::string& where);
int64_t json_int_or(const json& j, const std::string& key, int64_t dflt, const std::string& where);
double json_num(const json& j, const std::string& key, const std::string& where);
double json_num_or(const json& j, const std::string& key, double dflt, const std::string& where);
bool json_bool_or(const json& j, const std::string& key, bool dflt, const std::string& where);
std::string json_str(const json& j, const std::string& key, const std::string& where);
std::string json_str_or(const json& j, const std::string& key, const std::string& dflt, const std::string& where);
// A required list of strings (e.g. gold answers); errors name `where` and the field.
std::vector<std::string> json_str_list(const json& j, const std::string& key, const std::string& where);

}  // namespace sr
