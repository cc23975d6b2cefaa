// The reading runtime (protocol.md): EMR (Smooth Reading: one state, query first, per chunk
// prefill + summary + <READ>/<STOP>), NMR (fresh state per round, previous summary re-fed in
// <|memory|>), and OR (one pass, query-first or context-first).
// The reader drives a ReaderModel (one sequence state it can feed and extend greedily), so the
// control flow is testable with a scripted model and runs on any architecture the engine has.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/io.h"
#include "infer/session.h"
#include "models/tokenizer.h"
#include "reading/chunker.h"
#include "reading/protocol.h"

namespace sr {


struct ReadingOptions {
  std::string mode = "emr";  // emr | nmr | or | or-context-first
  int chunk_tokens = 512, max_summary_tokens = 96, max_answer_tokens = 64;
  int max_rounds = 0;  // 0 = no limit
  bool early_stop = true;
  bool word_estimate = false;  // chunk with int(1.5 x words) instead of the tokenizer
  Markers markers;
  // Defaults <- smoothread.json (null = none) ; errors name the file and field.
  static ReadingOptions from_model_json(const json& j, const std::string& where);
};

// One line of --trace.
struct RoundTrace {
  int round = 0, chunk_index = 0;
  int64_t token_begin = 0, token_end = 0;  // span in the document's tokens
  size_t byte_begin = 0, byte_end = 0;     // span in the document's bytes
  std::string summary, action;             // action: READ | STOP
  std::string overrule;  // "" | summary_budget | read_after_eod | no_early_stop | max_rounds
  int summary_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  json to_json() const;
};

struct ReadResult {
  std::string answer, mode;
  int rounds = 0, chunks = 0;
  bool stopped_early = false;
  int64_t context_tokens = 0, tokens_read = 0, tokens_generated = 0;
  size_t bytes_read = 0;  // end of the last chunk read (with early stop: where reading stopped)
  double seconds = 0;
  size_t state_bytes = 0;  // largest model state seen during the read
  std::vector<RoundTrace> trace;
  json to_json() const;  // without the trace
};

// What the reader drives: one sequence, fed and extended greedily.
class ReaderModel {
 public:
  virtual ~ReaderModel() = default;
  virtual void reset() = 0;                               // empty state
  virtual void feed(const std::vector<int32_t>& ids) = 0;  // extend the state
  virtual int32_t next_token() = 0;                       // greedy choice after the fed tokens
  virtual size_t state_bytes() const = 0;
};

// ReaderModel over the engine's transformer session (greedy).
class SessionReaderModel : public ReaderModel {
 public:
  explicit SessionReaderModel(const LanguageModel& m) : model_(m), session_(std::make_unique<Session>(m)) {}
  void reset() override { session_ = std::make_unique<Session>(model_); }
  void feed(const std::vector<int32_t>& ids) override { session_->prefill(ids); }
  int32_t next_token() override { return session_->sample(); }
  size_t state_bytes() const override { return session_->state_bytes(); }

 private:
  const LanguageModel& model_;
  std::unique_ptr<Session> session_;
};

// The window rule (protocol.md): a sliding-window model must fit chunk + summary budget + the
// restated target (~ question tokens + marker overhead) in its window. Throws with the numbers.
void check_window_rule(int window, const ReadingOptions& o, int question_tokens);

class Reader {
 public:
  Reader(ReaderModel& model, const Tokenizer& tok, ReadingOptions opt);
  // on_round is called after every round (progress, traces).
  ReadResult read(const std::string& document, const std::string& question,
                  const std::function<void(const RoundTrace&, const ReadResult&)>& on_round = {});

 private:
  struct Generated {
    std::vector<int32_t> ids;  // generated tokens, the last (unfed) one included
    std::string text;          // decoded text without the stop marker
    int stop = -1;             // index into the stop list that ended generation, -1 = budget
  };
  // Decodes greedily until the text ends with one of `stops` or `budget` tokens; the token that
  // completes a stop marker is NOT fed (the caller feeds it or overrules it).
  Generated generate(const std::vector<std::string>& stops, int budget);
  std::vector<int32_t> markers(const std::string& s) const { return tok_.encode(s, true); }
  std::vector<int32_t> text(const std::string& s) const { return tok_.encode(s, false); }
  void feed(const std::vector<int32_t>& ids, ReadResult& r);
  ReadResult read_rounds(const std::string& doc, const std::string& q, const std::vector<Chunk>& chunks, bool nmr,
                         const std::function<void(const RoundTrace&, const ReadResult&)>& on_round);
  ReadResult read_one_pass(const std::string& doc, const std::string& q, const std::vector<Chunk>& chunks,
                           bool context_first);

  ReaderModel& model_;
  const Tokenizer& tok_;
  ReadingOptions opt_;
};

}  // namespace sr
