// One error type for the whole library. Messages name the file, line or field at fault,
// so a user can fix bad input without reading our code. The CLI maps Error -> exit code 2.
#pragma once
#include <stdexcept>
#include <string>

namespace sr {

class Error : public std::runtime_error {
 public:
  // where: "path/to/config.json: field 'hidden_size'" or "data.jsonl:12"; what: the problem.
  Error(const std::string& where, const std::string& what)
      : std::runtime_error(where.empty() ? what : where + ": " + what), where_(where) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

[[noreturn]] inline void fail(const std::string& where, const std::string& what) { throw Error(where, what); }

// Internal invariant check (programming errors, not user input).
#define SR_ASSERT(cond, msg)                                                               \
  do {                                                                                     \
    if (!(cond)) ::sr::fail(std::string(__FILE__) + ":" + std::to_string(__LINE__), msg);  \
  } while (0)

}  // namespace sr
