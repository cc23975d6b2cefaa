#include "models/chat_template.h"

#include "core/error.h"

namespace sr {

void ChatTemplate::check_kind(const std::string& kind, const std::string& where) {
  if (kind != "none" && kind != "chatml") fail(where, "unknown chat format '" + kind + "' (supported: none, chatml)");
}

ChatTemplate ChatTemplate::from_model_json(const json& j, const std::string& where) {
  ChatTemplate c;
  if (!j.is_object()) return c;
  c.kind = json_str_or(j, "chat", c.kind, where);
  check_kind(c.kind, where + ": field 'chat'");
  c.system = json_str_or(j, "system", c.system, where);
  return c;
}

std::string ChatTemplate::user_turn(const std::string& user) const {
  if (kind == "none") return user;
  std::string s;
  if (!system.empty()) s += "<|im_start|>system\n" + system + "<|im_end|>\n";
  return s + "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
}

}  // namespace sr
