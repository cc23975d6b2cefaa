// `smoothread longbench`: LongBench predictions (one pass or Smooth Reading) and official scores.
#include <iostream>
#include <sstream>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "eval/longbench.h"

namespace sr::cli {

namespace {
// --tasks: a comma list, or all | en | zh (default: every task whose data file is in --data-dir).
std::vector<std::string> task_list(const Args& a, const std::string& data_dir, bool e) {
  std::string spec = a.get_or("--tasks", "");
  std::vector<std::string> out;
  for (auto& t : longbench::tasks()) {
    if (e && !t.in_e) continue;
    bool zh = std::string(t.lang) == "zh";
    if ((spec.empty() && path_exists(longbench::data_file(data_dir, t.name, e))) || spec == "all" ||
        (spec == "en" && !zh) || (spec == "zh" && zh))
      out.push_back(t.name);
  }
  if (!spec.empty() && spec != "all" && spec != "en" && spec != "zh") {
    out = split_list(spec);
    for (auto& t : out)
      if (!longbench::find_task(t)) fail("--tasks", "unknown LongBench task '" + t + "'");
  }
  if (out.empty()) fail(data_dir, "no LongBench data files (<task>" + std::string(e ? "_e" : "") + ".jsonl) here");
  return out;
}

longbench::SimBackend sim_backend(const Args& a) {
  std::string s = a.get_or("--code-sim", "difflib");
  if (s == "difflib") return longbench::SimBackend::difflib;
  if (s == "levenshtein") return longbench::SimBackend::levenshtein;
  fail("--code-sim", "expected difflib (LongBench's default install) or levenshtein");
}

int score_and_print(const Args& a, const std::string& pred_dir, const std::string& data_dir) {
  longbench::ScoreOptions so;
  so.e = a.has("--e");
  so.code_sim = sim_backend(a);
  so.jieba_dir = a.get_or("--jieba-dir", "");
  so.data_dir = data_dir;
  so.paper_row = a.get_or("--paper-row", "");
  so.log = [](const std::string& s) { std::cerr << "note: " << s << "\n"; };
  json r = longbench::score_dir(pred_dir, so);
  write_file_atomic(join_path(pred_dir, "result.json"), r["result"].dump(4) + "\n");  // eval.py's file
  json full = r;
  full.erase("markdown");
  write_file_atomic(join_path(pred_dir, "scores.json"), full.dump(2) + "\n");
  if (a.has("--json")) std::cout << full.dump() << "\n";
  else std::cout << r["markdown"].get<std::string>();
  return 0;
}
}  // namespace

int cmd_longbench(int argc, char** argv) {
  const char* usage =
      "smoothread longbench --model DIR --data-dir LongBench/data --config-dir LongBench/config --out DIR\n"
      "                     [--tasks a,b,...|all|en|zh] [--mode or|emr|nmr] [--e] [--max-length N]\n"
      "                     [--chunk-tokens C] [--max-summary-tokens S] [--max-rounds R] [--no-early-stop]\n"
      "                     [--chat none|chatml] [--system TEXT] [--code-sim difflib|levenshtein]\n"
      "                     [--paper-row NAME] [--json] [--quiet]\n"
      "                     [--device cpu|cuda] [--threads N]\n"
      "smoothread longbench --score-only --pred-dir DIR [--e] [--data-dir D] [--code-sim ...] [--jieba-dir D]\n"
      "                     [--paper-row NAME] [--json]\n"
      "Predicts with the official prompts (dataset2prompt.json) and generation lengths (dataset2maxlen.json):\n"
      "  or      the formatted prompt in one pass, middle-truncated to --max-length tokens (default: none),\n"
      "          then wrapped in the chat format (--chat, default from smoothread.json, else none) except\n"
      "          for trec, triviaqa, samsum, lsht, lcc and repobench-p, as pred.py does;\n"
      "  emr/nmr Smooth Reading, question first: the prompt without its context is the query, the context\n"
      "          is read in chunks (summarization and code tasks: the instruction alone is the query).\n"
      "Predictions go to DIR/<task>.jsonl (resumable; fields pred, answers, all_classes, length, _id, as\n"
      "LongBench's eval.py reads them), then are scored: DIR/result.json (eval.py's format), DIR/scores.json\n"
      "(with categories and averages) and a markdown table. --e: LongBench-E (<task>_e.jsonl, length buckets).\n"
      "Chinese tasks use jieba's data from Debian's python3-jieba (or --jieba-dir / SMOOTHREAD_JIEBA_DIR).\n"
      "--paper-row: qwen2.5-3b-or, qwen2.5-3b-nmr, swa-3b-4k-or, swa-3b-4k-emr, rwkv7-3b-or, rwkv7-3b-emr, ...\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2,
         {"--model", "--data-dir", "--config-dir", "--out", "--tasks", "--mode", "--max-length", "--chunk-tokens",
          "--max-summary-tokens", "--max-rounds", "--code-sim", "--paper-row", "--pred-dir", "--jieba-dir", "--threads",
          "--device", "--chat", "--system", "--window", "--swa-layers"},
         {"--e", "--score-only", "--json", "--quiet", "--no-early-stop"});
  set_threads(a);
  if (a.has("--score-only")) return score_and_print(a, a.get("--pred-dir"), a.get_or("--data-dir", ""));

  std::string data_dir = a.get("--data-dir"), out = a.get("--out");
  longbench::Config cfg = longbench::Config::load(a.get("--config-dir"));
  longbench::PredictOptions po;
  po.e = a.has("--e");
  po.tasks = task_list(a, data_dir, po.e);
  po.mode = a.get_or("--mode", "or");
  po.max_length = int(a.get_int("--max-length", 0));
  if (po.max_length < 0) fail("--max-length", "must be >= 0");
  sim_backend(a);  // validate before the long part
  LoadedModel m = load_model(a, true);
  place_model(a, *m.model);
  po.chat = ChatTemplate::from_model_json(m.reading_config, join_path(m.dir, "smoothread.json"));
  po.chat.kind = a.get_or("--chat", po.chat.kind);
  ChatTemplate::check_kind(po.chat.kind, "--chat");
  po.chat.system = a.get_or("--system", po.chat.system);
  po.reading = ReadingOptions::from_model_json(m.reading_config, join_path(m.dir, "smoothread.json"));
  po.reading.chunk_tokens = int(a.get_int("--chunk-tokens", po.reading.chunk_tokens));
  po.reading.max_summary_tokens = int(a.get_int("--max-summary-tokens", po.reading.max_summary_tokens));
  po.reading.max_rounds = int(a.get_int("--max-rounds", po.reading.max_rounds));
  po.reading.early_stop = !a.has("--no-early-stop");
  Progress bar(!a.has("--quiet"));
  po.progress = [&](const std::string& task, int64_t done, int64_t total) { bar.update(task, done, total, "samples"); };
  po.log = [&](const std::string& s) {
    bar.done();
    std::cerr << "warning: " << s << "\n";
  };
  longbench::PredictStats st = longbench::predict(m, cfg, data_dir, out, po);
  bar.done();
  if (!a.has("--quiet"))
    std::cerr << "predicted " << st.written << ", skipped " << st.skipped << " already in " << out << "; "
              << (po.mode != "or" ? "no truncation (" + po.mode + " reads everything)"
                  : po.max_length ? "middle-truncated to " + std::to_string(po.max_length) + " tokens: " +
                                        std::to_string(st.truncated) + " prompt(s) cut"
                                  : std::string("no truncation"))
              << "\n";
  return score_and_print(a, out, data_dir);
}

}  // namespace sr::cli
