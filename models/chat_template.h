// Built-in chat formats (no Jinja): "none" (the raw prompt) and "chatml", the form Qwen instruct
// models use:  [<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
// Selected by smoothread.json ("chat": "chatml", optional "system") or --chat / --system.
#pragma once
#include <string>

#include "core/io.h"

namespace sr {

struct ChatTemplate {
  std::string kind = "none";  // none | chatml
  std::string system;         // chatml: system message ("" = no system turn)

  // Defaults from smoothread.json (null = none); errors name the file and field.
  static ChatTemplate from_model_json(const json& j, const std::string& where);
  // Throws naming `where` for an unknown kind.
  static void check_kind(const std::string& kind, const std::string& where);
  bool active() const { return kind != "none"; }
  // One user turn, ready for the assistant's reply.
  std::string user_turn(const std::string& user) const;
};

}  // namespace sr
