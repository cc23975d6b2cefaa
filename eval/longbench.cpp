#include "eval/longbench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "core/utf8.h"
#include "infer/session.h"

namespace sr::longbench {

// ---------------------------------------------------------------- data and config
std::string data_file(const std::string& data_dir, const std::string& task, bool e) {
  return join_path(data_dir, task + (e ? "_e" : "") + ".jsonl");
}

namespace {
const json& all_classes_of(const json& j, const std::string& where) {
  if (!j.contains("all_classes")) fail(where + ": field 'all_classes'", "missing (null or a list of strings)");
  return j["all_classes"];
}
}  // namespace

std::vector<Sample> load_samples(const std::string& path, const std::string& task) {
  if (!path_exists(path)) fail(path, "LongBench data file not found (--data-dir should hold <task>.jsonl files)");
  std::vector<Sample> out;
  for_each_jsonl(path, [&](json& j, const std::string& where) {
    Sample s;
    s.where = where;
    s.input = json_str(j, "input", where);
    s.context = json_str(j, "context", where);
    s.id = json_str(j, "_id", where);
    s.dataset = json_str_or(j, "dataset", task, where);
    s.language = json_str_or(j, "language", "", where);
    if (s.dataset != task && s.dataset != task + "_e")
      fail(where + ": field 'dataset'", "is '" + s.dataset + "' in the file of task '" + task + "'");
    s.answers = json_str_list(j, "answers", where);
    s.length = json_int(j, "length", where);
    s.all_classes = all_classes_of(j, where);
    for (const char* k : {"input", "context"}) {
      size_t bad = find_invalid_utf8(j[k].get_ref<const std::string&>());
      if (bad != std::string::npos) fail(where + ": field '" + k + "'", "invalid UTF-8 at byte " + std::to_string(bad));
    }
    s.fields = std::move(j);
    out.push_back(std::move(s));
  });
  return out;
}

Config Config::load(const std::string& dir) {
  Config c;
  c.dir = dir;
  c.prompts = load_json_file(join_path(dir, "dataset2prompt.json"));
  c.maxlen = load_json_file(join_path(dir, "dataset2maxlen.json"));
  return c;
}

const std::string& Config::prompt(const std::string& task) const {
  if (!prompts.contains(task) || !prompts[task].is_string())
    fail(join_path(dir, "dataset2prompt.json"), "no prompt for task '" + task + "'");
  return prompts[task].get_ref<const std::string&>();
}

int Config::maxgen(const std::string& task) const {
  if (!maxlen.contains(task) || !maxlen[task].is_number_integer())
    fail(join_path(dir, "dataset2maxlen.json"), "no integer max length for task '" + task + "'");
  return maxlen[task].get<int>();
}

std::string format_template(const std::string& t, const json& fields, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if ((c == '{' || c == '}') && i + 1 < t.size() && t[i + 1] == c) {
      out += c;
      ++i;
    } else if (c == '{') {
      size_t e = t.find('}', i);
      if (e == std::string::npos) fail(where, "prompt template has an unclosed '{'");
      std::string name = t.substr(i + 1, e - i - 1);
      if (!fields.contains(name)) fail(where, "prompt template needs field '" + name + "', which the sample lacks");
      const json& v = fields[name];
      out += v.is_string() ? v.get<std::string>() : v.dump();
      i = e;
    } else if (c == '}') {
      fail(where, "prompt template has a single '}'");
    } else {
      out += c;
    }
  }
  return out;
}

std::string reading_query(const std::string& tmpl, const json& fields, const std::string& where) {
  json f = fields;
  f["context"] = "";
  return format_template(tmpl, f, where);
}

std::string middle_truncate(const std::string& prompt, const Tokenizer& tok, int max_length, bool* truncated) {
  if (truncated) *truncated = false;
  if (max_length <= 0) return prompt;
  std::vector<int32_t> ids = tok.encode(prompt, false);
  if (int64_t(ids.size()) <= max_length) return prompt;
  if (truncated) *truncated = true;
  int half = max_length / 2;
  std::vector<int32_t> head(ids.begin(), ids.begin() + half), tail(ids.end() - half, ids.end());
  return tok.decode(head, true) + tok.decode(tail, true);
}

// ---------------------------------------------------------------- prediction
namespace {
// Greedy generation after `prompt`; special-token strings are parsed only in a chat-wrapped prompt.
std::string one_pass(const LoadedModel& m, const std::string& prompt, bool chat, int maxgen, bool stop_at_newline) {
  Session s(*m.model);
  std::vector<int32_t> ids = m.tokenizer->encode(prompt, chat);
  if (ids.empty()) ids = m.tokenizer->encode(" ", false);
  s.prefill(ids);
  const int32_t eos = m.model->config().eos_token_id;
  std::vector<int32_t> out;
  for (int i = 0; i < maxgen; ++i) {
    int32_t t = s.sample();
    if (t == eos) break;
    out.push_back(t);
    if (stop_at_newline && m.tokenizer->decode({t}, true).find('\n') != std::string::npos) break;
    s.prefill({t});
  }
  return make_valid_utf8(m.tokenizer->decode(out, true));
}
}  // namespace

PredictStats predict(const LoadedModel& m, const Config& cfg, const std::string& data_dir, const std::string& out_dir,
                     const PredictOptions& opt) {
  if (!m.tokenizer) fail(m.dir, "LongBench needs the model's tokenizer.json");
  if (opt.mode != "or" && opt.mode != "emr" && opt.mode != "nmr") fail("--mode", "expected or, emr or nmr");
  make_dirs(out_dir);
  PredictStats st;
  for (const std::string& task : opt.tasks) {
    const TaskInfo* info = find_task(task);
    if (!info) fail("--tasks", "unknown LongBench task '" + task + "'");
    if (opt.e && !info->in_e) fail("--tasks", "'" + task + "' is not part of LongBench-E");
    std::string in = data_file(data_dir, task, opt.e), out = join_path(out_dir, task + ".jsonl");
    std::vector<Sample> samples = load_samples(in, task);
    const std::string& tmpl = cfg.prompt(task);
    int maxgen = cfg.maxgen(task);
    std::set<std::string> ids, done;
    for (auto& s : samples) ids.insert(s.id);
    int64_t line = 0;
    for (auto& j : resume_jsonl(out)) {
      ++line;
      std::string id = j.contains("_id") && j["_id"].is_string() ? j["_id"].get<std::string>() : "";
      if (!ids.count(id))
        fail(out + ":" + std::to_string(line), "_id '" + id + "' is not in " + in + " (predictions of another data set?)");
      done.insert(id);
    }
    if (opt.mode != "or" && opt.log) {  // the window rule, checked against the task's longest query
      const ModelConfig& mc = m.model->config();
      ReadingOptions ro = opt.reading;
      ro.mode = opt.mode;
      ro.max_answer_tokens = maxgen;
      size_t longest = 0;
      for (auto& s : samples)
        longest = std::max(longest, m.tokenizer->encode(reading_query(tmpl, s.fields, s.where), false).size());
      try {
        check_window_rule(mc.any_sliding() ? mc.sliding_window : 0, ro, int(longest));
      } catch (const Error& e) {
        opt.log(task + ": its longest query breaks the window rule (" + e.what() + "); predicting anyway");
      }
    }
    JsonlAppender fo(out);
    int64_t n = 0;
    for (auto& s : samples) {
      ++n;
      if (done.count(s.id)) {
        ++st.skipped;
        continue;
      }
      json rec;
      if (opt.mode == "or") {
        bool cut = false;
        std::string prompt = middle_truncate(format_template(tmpl, s.fields, s.where), *m.tokenizer, opt.max_length, &cut);
        st.truncated += cut;
        bool chat = opt.chat.active() && !info->no_chat;  // pred.py: truncate, then build the chat
        if (chat) prompt = opt.chat.user_turn(prompt);
        rec["pred"] = one_pass(m, prompt, chat, maxgen, task == "samsum");
        rec["truncated"] = cut;
        rec["chat"] = chat ? opt.chat.kind : "none";
      } else {
        ReadingOptions ro = opt.reading;
        ro.mode = opt.mode;
        ro.max_answer_tokens = maxgen;
        SessionReaderModel rm(*m.model);
        Reader rd(rm, *m.tokenizer, ro);
        ReadResult r = rd.read(s.context.empty() ? std::string(" ") : s.context, reading_query(tmpl, s.fields, s.where));
        rec["pred"] = make_valid_utf8(r.answer);
        rec["rounds"] = r.rounds, rec["tokens_read"] = r.tokens_read, rec["context_tokens"] = r.context_tokens;
        rec["stopped_early"] = r.stopped_early, rec["seconds"] = r.seconds;
      }
      rec["answers"] = s.answers, rec["all_classes"] = s.all_classes, rec["length"] = s.length, rec["_id"] = s.id;
      fo.append(rec);
      ++st.written;
      if (opt.progress) opt.progress(task, n, int64_t(samples.size()));
    }
  }
  return st;
}

// ---------------------------------------------------------------- scoring
double py_round2(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", x);  // glibc: exact decimal expansion, ties to even
  return std::strtod(buf, nullptr);
}
double np_round2(double x) { return std::nearbyint(x * 100.0) / 100.0; }

namespace {
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = -0.0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int k = 0; k < 8; ++k) r[k] += a[i + k];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}
}  // namespace

double np_mean(const std::vector<double>& x) {
  if (x.empty()) return std::nan("");
  return (0.0 + pairwise_sum(x.data(), x.size())) / double(x.size());
}

const json& paper_rows() {
  static const json rows = {
      {"qwen2.5-3b-or", {{"label", "Qwen-2.5-3B-OR"}, {"avg", 47.38}, {"Summarization", 30.22}, {"Code", 66.00}}},
      {"qwen2.5-3b-nmr", {{"label", "Qwen-2.5-3B-NMR"}, {"avg", 48.37}, {"Summarization", 21.91}, {"Code", 64.13}}},
      {"rwkv7-3b-or", {{"label", "RWKV-7-3B-OR"}, {"avg", 41.43}}},
      {"swa-3b-4k-or", {{"label", "SWA-3B-4k-OR"}, {"avg", 41.70}}},
      {"rwkv7-3b-emr", {{"label", "RWKV-7-3B-EMR"}, {"avg", 48.03}}},
      {"swa-3b-4k-emr", {{"label", "SWA-3B-4k-EMR"}, {"avg", 50.99}}},
      {"qwen2.5-7b-or", {{"label", "Qwen-2.5-7B-OR"}, {"avg", 54.60}}},
      {"swa-7b-4k-or", {{"label", "SWA-7B-4k-OR"}, {"avg", 46.17}}},
      {"swa-7b-4k-emr", {{"label", "SWA-7B-4k-EMR"}, {"avg", 53.86}}},
  };
  return rows;
}

json score_dir(const std::string& pred_dir, const ScoreOptions& opt) {
  if (!is_directory(pred_dir)) fail(pred_dir, "prediction directory not found");
  std::vector<std::string> files;
  for (auto& e : std::filesystem::directory_iterator(pred_dir)) {
    std::string name = e.path().filename().string();
    if (name.size() > 6 && name.compare(name.size() - 6, 6, ".jsonl") == 0) files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) fail(pred_dir, "no <task>.jsonl prediction files");
  if (!opt.paper_row.empty() && !paper_rows().contains(opt.paper_row))
    fail("--paper-row", "unknown row '" + opt.paper_row + "'");
  MetricContext ctx;
  ctx.code_sim = opt.code_sim;
  ctx.log = opt.log;
  json result = json::object(), task_rows = json::array();
  std::map<std::string, double> raw;  // unrounded task scores (100 x mean)
  int64_t total_samples = 0;
  for (auto& file : files) {
    std::string task = file.substr(0, file.find('.'));  // eval.py: filename.split('.')[0]
    std::string path = join_path(pred_dir, file);
    const TaskInfo* info = find_task(task);
    if (!info) fail(path, "unknown LongBench dataset '" + task + "' (file names must be <task>.jsonl)");
    if (std::string(info->lang) == "zh" && !ctx.jieba)
      ctx.jieba = &Jieba::shared(opt.jieba_dir.empty() ? Jieba::default_dir() : opt.jieba_dir);
    std::set<std::string> data_ids;
    if (!opt.data_dir.empty())
      for (auto& s : load_samples(data_file(opt.data_dir, task, opt.e), task)) data_ids.insert(s.id);
    std::vector<double> scores;
    std::map<std::string, std::vector<double>> buckets = {{"0-4k", {}}, {"4-8k", {}}, {"8k+", {}}};
    json all_classes;
    struct Item {
      std::string where, pred;
      std::vector<std::string> answers;
    };
    std::vector<Item> items;
    std::vector<int64_t> lengths;
    for_each_jsonl(path, [&](json& j, const std::string& where) {
      std::string pred = json_str(j, "pred", where);
      std::vector<std::string> answers = json_str_list(j, "answers", where);
      all_classes = all_classes_of(j, where);  // eval.py keeps the last line's
      if (opt.e) lengths.push_back(json_int(j, "length", where));
      if (!data_ids.empty()) {
        std::string id = j.contains("_id") && j["_id"].is_string() ? j["_id"].get<std::string>() : "";
        if (!data_ids.count(id))
          fail(where + ": field '_id'", "'" + id + "' is not in " + data_file(opt.data_dir, task, opt.e));
      }
      items.push_back({where, std::move(pred), std::move(answers)});
    });
    ctx.all_classes.clear();
    if (std::string(info->metric) == "classification_score") {
      if (!all_classes.is_array()) fail(path, "classification task needs 'all_classes' as a list of strings");
      for (auto& c : all_classes) ctx.all_classes.push_back(py::from_utf8(c.is_string() ? c.get<std::string>() : c.dump()));
    }
    double total = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      double s;
      try {
        s = score_sample(*info, items[k].pred, items[k].answers, ctx);
      } catch (const std::invalid_argument& e) {
        fail(items[k].where, e.what());
      }
      total += s;
      scores.push_back(s);
      if (opt.e) buckets[lengths[k] < 4000 ? "0-4k" : lengths[k] < 8000 ? "4-8k" : "8k+"].push_back(s);
    }
    if (items.empty()) fail(path, "no predictions");
    total_samples += int64_t(items.size());
    raw[task] = 100 * total / double(items.size());
    json row = {{"task", task}, {"category", info->category}, {"metric", info->metric}, {"n", items.size()}};
    if (opt.e) {
      json b = json::object();
      for (const char* k : {"0-4k", "4-8k", "8k+"}) {
        double v = np_round2(100 * np_mean(buckets[k]));
        b[k] = std::isnan(v) ? json(nullptr) : json(v);  // numpy gives NaN for an empty bucket
        row["n_" + std::string(k)] = buckets[k].size();
      }
      result[task] = b;
      row["buckets"] = b;
    } else {
      result[task] = py_round2(raw[task]);
      row["score"] = result[task];
    }
    task_rows.push_back(row);
  }

  // Category means from unrounded task scores; the 6-category averages; plain means.
  auto mean_of = [&](const std::vector<std::string>& ts, bool& complete) {
    double s = 0;
    int n = 0;
    for (auto& t : ts)
      if (raw.count(t)) s += raw[t], ++n;
    complete = n == int(ts.size());
    return n ? s / n : std::nan("");
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> en = {
      {"Single-Doc QA", {"narrativeqa", "qasper", "multifieldqa_en"}},
      {"Multi-Doc QA", {"hotpotqa", "2wikimqa", "musique"}},
      {"Summarization", {"gov_report", "qmsum", "multi_news"}},
      {"Few-shot", {"trec", "triviaqa", "samsum"}},
      {"Synthetic", {"passage_count", "passage_retrieval_en"}},
      {"Code", {"lcc", "repobench-p"}}};
  const std::vector<std::pair<std::string, std::vector<std::string>>> zh = {
      {"Single-Doc QA", {"multifieldqa_zh"}}, {"Multi-Doc QA", {"dureader"}}, {"Summarization", {"vcsum"}},
      {"Few-shot", {"lsht"}}, {"Synthetic", {"passage_retrieval_zh"}}, {"Code", {"lcc", "repobench-p"}}};
  json cats = json::object(), avgs = json::object();
  std::map<std::string, double> en_cat_raw;
  for (auto& [lang, groups] : {std::make_pair(std::string("en"), en), std::make_pair(std::string("zh"), zh)}) {
    json c = json::object();
    double sum = 0;
    int n = 0;
    bool all = true;
    for (auto& [name, ts] : groups) {
      bool complete;
      double v = mean_of(ts, complete);
      if (std::isnan(v)) {
        all = false;
        continue;
      }
      all = all && complete;
      c[name] = {{"score", py_round2(v)}, {"complete", complete}};
      if (lang == "en") en_cat_raw[name] = v;
      sum += v, ++n;
    }
    if (!c.empty()) cats[lang] = c;
    if (n) avgs[lang + "_avg_6_categories"] = {{"score", py_round2(sum / n)}, {"complete", all && n == 6}};
  }
  std::vector<std::string> en16, all21;
  for (auto& t : tasks()) {
    all21.push_back(t.name);
    if (std::string(t.lang) != "zh") en16.push_back(t.name);
  }
  for (auto& [name, ts] : {std::make_pair(std::string("en_mean_16_tasks"), en16), std::make_pair(std::string("mean_21_tasks"), all21)}) {
    bool complete;
    double v = mean_of(ts, complete);
    if (!std::isnan(v)) avgs[name] = {{"score", py_round2(v)}, {"complete", complete}};
  }
  if (opt.e) cats = json::object(), avgs = json::object();  // LongBench-E reports buckets only

  // Markdown.
  std::string md;
  char buf[512];
  if (opt.e) {
    md = "| task | category | n | 0-4k | 4-8k | 8k+ |\n|---|---|---|---|---|---|\n";
    for (auto& r : task_rows) {
      auto cell = [&](const char* k) {
        const json& v = r["buckets"][k];
        if (v.is_null()) return std::string("nan");
        std::snprintf(buf, sizeof buf, "%.2f", v.get<double>());
        return std::string(buf);
      };
      md += "| " + r["task"].get<std::string>() + " | " + r["category"].get<std::string>() + " | " +
            std::to_string(r["n"].get<int64_t>()) + " | " + cell("0-4k") + " | " + cell("4-8k") + " | " + cell("8k+") + " |\n";
    }
  } else {
    md = "| task | category | metric | n | score |\n|---|---|---|---|---|\n";
    for (auto& r : task_rows) {
      std::snprintf(buf, sizeof buf, "| %s | %s | %s | %lld | %.2f |\n", r["task"].get<std::string>().c_str(),
                    r["category"].get<std::string>().c_str(), r["metric"].get<std::string>().c_str(),
                    (long long)r["n"].get<int64_t>(), r["score"].get<double>());
      md += buf;
    }
    const json* paper = opt.paper_row.empty() ? nullptr : &paper_rows()[opt.paper_row];
    md += "\n| aggregate | ours |" + std::string(paper ? " paper (" + (*paper)["label"].get<std::string>() + ") |" : "") +
          "\n|---|---|" + (paper ? "---|" : "") + "\n";
    auto paper_cell = [&](const std::string& key) {
      if (!paper) return std::string();
      return (*paper).contains(key) ? " " + std::to_string((*paper)[key].get<double>()).substr(0, 5) + " |" : " - |";
    };
    for (auto& [lang, groups] : {std::make_pair(std::string("en"), en), std::make_pair(std::string("zh"), zh)}) {
      if (!cats.contains(lang)) continue;
      for (auto& g : groups) {
        if (!cats[lang].contains(g.first)) continue;
        const json& v = cats[lang][g.first];
        std::snprintf(buf, sizeof buf, "| %s %s%s | %.2f |", lang == "en" ? "EN" : "ZH", g.first.c_str(),
                      v["complete"].get<bool>() ? "" : " (partial)", v["score"].get<double>());
        md += buf + (lang == "en" ? paper_cell(g.first) : paper_cell("-")) + "\n";
      }
    }
    for (auto& [name, v] : avgs.items()) {
      std::snprintf(buf, sizeof buf, "| %s%s | %.2f |", name.c_str(), v["complete"].get<bool>() ? "" : " (partial)",
                    v["score"].get<double>());
      md += buf + paper_cell(name == "en_avg_6_categories" ? "avg" : "-") + "\n";
    }
  }
  return {{"result", result}, {"tasks", task_rows}, {"categories", cats}, {"averages", avgs}, {"markdown", md},
          {"samples", total_samples}, {"code_sim", opt.code_sim == SimBackend::difflib ? "difflib" : "levenshtein"},
          {"longbench_e", opt.e}};
}

}  // namespace sr::longbench
