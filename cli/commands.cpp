#include "cli/commands.h"
#include "models/rwkv7_convert.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli/args.h"
#include "core/io.h"
#include "core/utf8.h"
#include "data/synthetic.h"
#include "data/text_mix.h"
#include "models/bpe_tokenizer.h"
#include "models/rwkv_world_tokenizer.h"
#include "data/toy_tasks.h"
#include "infer/session.h"
#include "models/model_dir.h"
#include "models/safetensors.h"
#include "ops/cuda/cuda_backend.h"
#include "train/trainer.h"

namespace sr::cli {


int cmd_train(int argc, char** argv) {
  const char* usage =
      "smoothread train --config train.json [--resume] [--out DIR] [--data FILE] [--steps N] [--max-seconds S]\n"
      "                 [--device cpu|cuda] [--threads N]\n"
      "Prints one JSON line per logged step: step, loss, lr, grad_norm, tokens_per_s, tokens (cumulative), elapsed_s.\n"
      "Writes OUT/checkpoint/ (resumable with --resume) and the final model to OUT/model/.\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--config", "--out", "--data", "--steps", "--max-seconds", "--threads", "--device"},
         {"--resume"});
  set_threads(a);
  std::string path = a.get("--config");
  json j = load_json_file(path);
  if (a.has("--out")) j["out_dir"] = a.get("--out");
  if (a.has("--data")) j["data"] = a.get("--data");
  if (a.has("--steps")) j["steps"] = a.get_int("--steps", 0), j.erase("tokens");  // steps beat a token budget
  if (a.has("--max-seconds")) j["max_seconds"] = a.get_num("--max-seconds", 0);
  if (a.has("--device")) j["device"] = a.get("--device");
  TrainConfig cfg = TrainConfig::from_json(j, path);
  Trainer tr(cfg);
  std::cerr << "training " << tr.model().config().num_parameters() << " parameters ("
            << tr.model().config().num_layers << " layers), " << tr.steps() << " steps -> " << cfg.out_dir << "\n";
  tr.run([](const json& line) { std::cout << line.dump() << std::endl; }, a.has("--resume"));
  std::cerr << "saved " << join_path(cfg.out_dir, "model") << " at step " << tr.step() << "\n";
  return 0;
}

int cmd_generate(int argc, char** argv) {
  const char* usage =
      "smoothread generate --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
      "                    [--seed S] [--json] [--device cpu|cuda] [--threads N] [--decode-weights fp32|bf16]\n"
      "Special-token strings in the prompt map to their ids. Stops at --max-tokens (default 64) or eos.\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--model", "--prompt", "--max-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--threads", "--device", "--decode-weights",
          "--window", "--swa-layers"},
         {"--json"});
  set_threads(a);
  LoadedModel m = load_model(a, true);
  place_model(a, *m.model);
  std::string prompt = a.get("--prompt");
  std::vector<int32_t> ids = m.tokenizer->encode(prompt);
  if (ids.empty()) fail("--prompt", "is empty");
  SamplingParams sp;
  sp.temperature = float(a.get_num("--temperature", 0.0));
  sp.top_k = int(a.get_int("--top-k", 0));
  sp.top_p = float(a.get_num("--top-p", 1.0));
  sp.seed = uint64_t(a.get_int("--seed", 0));
  if (sp.temperature < 0) fail("--temperature", "must be >= 0");
  if (sp.top_p <= 0 || sp.top_p > 1) fail("--top-p", "must be in (0, 1]");
  long long max_tokens = a.get_int("--max-tokens", 64);
  if (max_tokens < 0) fail("--max-tokens", "must be >= 0");
  Session s(*m.model, sp);
  auto t0 = std::chrono::steady_clock::now();
  s.prefill(ids);
  auto t1 = std::chrono::steady_clock::now();
  int eos = m.model->config().eos_token_id;
  // Text mode streams each token as it is decoded (never half a UTF-8 character); --json prints
  // once at the end.
  std::vector<int32_t> out;
  Utf8StreamDecoder stream(*m.tokenizer);
  for (long long i = 0; i < max_tokens; ++i) {
    const int32_t id = s.sample();  // as Session::generate: the stop token is returned, not fed
    out.push_back(id);
    if (id == eos) break;
    s.prefill({id});
    if (!a.has("--json")) std::cout << make_valid_utf8(stream.push({id})) << std::flush;
  }
  auto t2 = std::chrono::steady_clock::now();
  bool hit_eos = !out.empty() && out.back() == eos;
  std::vector<int32_t> text_ids = out;
  if (hit_eos) text_ids.pop_back();
  std::string text = m.tokenizer->decode(text_ids);
  if (a.has("--json")) {
    double pf = std::chrono::duration<double>(t1 - t0).count(), dc = std::chrono::duration<double>(t2 - t1).count();
    json r = {{"text", make_valid_utf8(text)}, {"prompt_ids", ids}, {"ids", out},
              {"finish_reason", hit_eos ? "eos" : "length"}, {"prefill_s", pf}, {"decode_s", dc},
              {"decode_tokens_per_s", dc > 0 ? out.size() / dc : 0.0}};
    std::cout << r.dump() << "\n";
  } else {
    std::cout << make_valid_utf8(stream.flush()) << "\n";
  }
  return 0;
}

int cmd_tokenize(int argc, char** argv) {
  const char* usage =
      "smoothread tokenize --tokenizer FILE|DIR [--decode] [--no-special] [--jsonl]\n"
      "stdin text -> JSON array of ids on stdout; with --decode, a JSON array of ids -> text.\n"
      "--jsonl: stdin lines {\"text\": ...} -> stdout lines {\"ids\": [...]} (one per input line, in order).\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--tokenizer"}, {"--decode", "--no-special", "--jsonl"});
  auto tok = Tokenizer::load(a.get("--tokenizer"));
  if (a.has("--jsonl")) {
    std::string line;
    for (size_t n = 1; std::getline(std::cin, line); ++n) {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::parse_error& e) {
        fail("stdin: line " + std::to_string(n), std::string("invalid JSON: ") + e.what());
      }
      const std::string text = json_str(j, "text", "stdin: line " + std::to_string(n));
      std::cout << json{{"ids", tok->encode(text, !a.has("--no-special"))}}.dump() << "\n";
    }
    return 0;
  }
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (a.has("--decode")) {
    json j;
    try {
      j = json::parse(in);
    } catch (const json::parse_error& e) {
      fail("stdin", std::string("expected a JSON array of ids: ") + e.what());
    }
    if (!j.is_array()) fail("stdin", "expected a JSON array of ids");
    std::vector<int32_t> ids;
    for (auto& v : j) {
      if (!v.is_number_integer()) fail("stdin", "ids must be integers");
      ids.push_back(v.get<int32_t>());
    }
    std::cout << tok->decode(ids);
  } else {
    std::cout << json(tok->encode(in, !a.has("--no-special"))).dump() << "\n";
  }
  return 0;
}

int cmd_convert(int argc, char** argv) {
  const char* usage =
      "smoothread convert --model DIR --out NEW_DIR --window W [--swa-layers all|0,2,4-7]\n"
      "Writes a copy of DIR whose config.json runs the attention layers with a W-token sliding window\n"
      "(W = 0: full attention), like the paper's SWA-3B-4k from Qwen2.5-3B; every other config field,\n"
      "the weights and the tokenizer are kept as they are. The same change works without a copy:\n"
      "--window W [--swa-layers ...] on read, eval, longbench, generate, score and info.\n"
      "\n"
      "smoothread convert --from rwkv7-pth FILE.pth --out NEW_DIR [--tokenizer rwkv_vocab_v20230424.txt]\n"
      "Converts BlinkDL's RWKV-7 (x070) checkpoint to an fla-hub-layout model directory. The .pth (a\n"
      "torch.save zip) is read without executing anything: only tensors and the globals that rebuild them\n"
      "are accepted; the shapes give the config.\n";
  if (wants_help(argc, argv, usage)) return 0;
  // `--from KIND FILE`: the file follows the kind (taken out before the flags are parsed)
  std::vector<char*> args(argv, argv + argc);
  std::string from_file;
  for (size_t i = 2; i + 2 < args.size(); ++i)
    if (std::string(args[i]) == "--from" && args[i + 2][0] != '-') {
      from_file = args[i + 2];
      args.erase(args.begin() + long(i) + 2);
      break;
    }
  Args a(int(args.size()), args.data(), 2, {"--model", "--out", "--window", "--swa-layers", "--from", "--tokenizer"},
         {"--json"});
  if (a.has("--from")) {
    const std::string kind = a.get("--from");
    if (kind != "rwkv7-pth") fail("--from", "expected rwkv7-pth, got '" + kind + "'");
    if (from_file.empty()) fail("--from rwkv7-pth", "needs the .pth file: convert --from rwkv7-pth FILE.pth --out DIR");
    const std::string pth = from_file;
    ModelConfig c = convert_rwkv7_pth(pth, a.get("--out"), a.get_or("--tokenizer", ""));
    json r = {{"out", a.get("--out")}, {"architecture", "rwkv7"}, {"layers", c.num_layers}, {"hidden_size", c.hidden_size},
              {"head_dim", c.head_dim}, {"vocab_size", c.vocab_size}, {"parameters", c.num_parameters()}};
    if (a.has("--json")) std::cout << r.dump() << "\n";
    else std::cout << "wrote " << a.get("--out") << ": RWKV-7, " << c.num_layers << " layers x " << c.hidden_size << ", "
                   << c.num_parameters() << " parameters\n";
    return 0;
  }
  LoadOptions o;
  o.window = int(a.get_int("--window", -1));
  if (o.window < 0) fail("--window", "is required and must be >= 0 (0 = full attention)");
  o.swa_layers = a.get_or("--swa-layers", "all");
  ModelConfig c = convert_model_dir(a.get("--model"), a.get("--out"), o);
  int sliding = 0;
  for (bool s : c.layer_sliding) sliding += s;
  json r = {{"out", a.get("--out")}, {"window", c.sliding_window}, {"sliding_layers", sliding}, {"layers", c.num_layers}};
  if (a.has("--json")) std::cout << r.dump() << "\n";
  else std::cout << "wrote " << a.get("--out") << ": " << sliding << " of " << c.num_layers << " layers with a "
                 << c.sliding_window << "-token window\n";
  return 0;
}

int cmd_info(int argc, char** argv) {
  const char* usage =
      "smoothread info --model DIR [--json] [--device cuda]\n"
      "With --device cuda: loads the model onto the GPU and adds a memory report (allocator and device).\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--model", "--device", "--window", "--swa-layers"}, {"--json"});
  std::string dir = a.get("--model");
  LoadedModel m = load_model(a, false);
  place_model(a, *m.model);
  const ModelConfig& c = m.model->config();
  json lt = json::array();
  for (int l = 0; l < c.num_layers; ++l) lt.push_back(c.layer_type(l));
  json r = {{"model", dir},
            {"architecture", c.model_type},
            {"parameters", c.num_parameters()},
            {"layers", c.num_layers},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"heads", c.num_heads},
            {"kv_heads", c.num_kv_heads},
            {"head_dim", c.head_dim},
            {"layer_types", lt},
            {"sliding_window", c.any_sliding() ? json(c.sliding_window) : json(nullptr)},
            {"vocab_size", c.vocab_size},
            {"tokenizer_vocab", m.tokenizer ? json(m.tokenizer->vocab_size()) : json(nullptr)},
            {"rope_theta", c.is_rwkv7() ? json(nullptr) : json(c.rope_theta)},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"eos_token_id", c.eos_token_id}};
  {  // what the checkpoint stores: tensor dtypes and files
    SafeTensorsSet st(dir);
    std::map<std::string, int> dtypes;
    for (auto& n : st.names()) ++dtypes[st.find(n)->dtype];
    r["checkpoint_dtypes"] = dtypes;
  }
  if (m.tokenizer) {
    json specials = json::array();
    for (int id = 0; id < m.tokenizer->vocab_size(); ++id)
      if (m.tokenizer->is_special(id)) specials.push_back(m.tokenizer->decode({id}));
    const json tj = m.tokenizer->to_json();
    std::string kind = tj.value("/model/type"_json_pointer, std::string("unknown"));
    if (dynamic_cast<const ByteTokenizer*>(m.tokenizer.get())) kind = "byte-level (256 byte symbols, no merges)";
    if (auto* b = dynamic_cast<const BpeTokenizer*>(m.tokenizer.get())) kind = b->kind();
    if (dynamic_cast<const RwkvWorldTokenizer*>(m.tokenizer.get()))
      kind = "RWKV World (greedy longest byte match, " + std::to_string(m.tokenizer->vocab_size()) + " ids)";
    r["tokenizer"] = {{"kind", kind}, {"special_tokens", specials}};
  }
  if (m.model->on_device()) {
    cuda::MemoryStats ms = cuda::memory_stats();
    r["device"] = {{"name", cuda::device_summary()},
                   {"gemm_precision", cuda::gemm_precision()},
                   {"parameter_bytes", m.model->num_params() * sizeof(float) * 2},  // parameters + gradients
                   {"allocator_in_use_bytes", ms.in_use},
                   {"allocator_reserved_bytes", ms.reserved},
                   {"allocator_peak_bytes", ms.peak_in_use},
                   {"cuda_malloc_calls", ms.device_allocs},
                   {"device_free_bytes", ms.device_free},
                   {"device_total_bytes", ms.device_total}};
  }
  if (a.has("--json")) {
    std::cout << r.dump() << "\n";
  } else {
    int nsw = 0, nlin = 0;
    for (bool s : c.layer_sliding) nsw += s;
    for (int l = 0; l < c.num_layers; ++l) nlin += c.is_linear(l);
    std::cout << "model:        " << dir << "\n"
              << "architecture: " << c.model_type << " (" << c.num_layers << " layers, "
              << (c.is_rwkv7() ? "RWKV-7 time mix + channel mix, constant-size state"
                               : std::to_string(nsw) + " sliding-window" +
                                     (nlin ? ", " + std::to_string(nlin) + " Gated DeltaNet" : std::string()))
              << ")\n"
              << "parameters:   " << c.num_parameters() << "\n"
              << "hidden:       " << c.hidden_size << ", mlp " << c.intermediate_size << ", heads " << c.num_heads << " (kv "
              << c.num_kv_heads << ", dim " << c.head_dim << ")\n"
              << "window:       " << (c.any_sliding() ? std::to_string(c.sliding_window) : c.is_rwkv7() ? "none (recurrent)" : "none (full attention)") << "\n"
              << "vocab:        " << c.vocab_size << (m.tokenizer ? " (tokenizer " + std::to_string(m.tokenizer->vocab_size()) + ")" : "") << "\n"
              << "weights:      " << r["checkpoint_dtypes"].dump() << "\n";
    if (r.contains("tokenizer"))
      std::cout << "tokenizer:    " << r["tokenizer"]["kind"].get<std::string>() << "; special tokens "
                << r["tokenizer"]["special_tokens"].dump() << "\n";
    if (r.contains("device")) {
      const json& d = r["device"];
      auto gib = [](const json& b) { return std::to_string(b.get<double>() / double(1 << 30)).substr(0, 5) + " GiB"; };
      std::cout << "device:       " << d["name"].get<std::string>() << ", GEMMs in " << d["gemm_precision"].get<std::string>() << "\n"
                << "memory:       params+grads " << gib(d["parameter_bytes"]) << "; allocator in use " << gib(d["allocator_in_use_bytes"])
                << ", reserved " << gib(d["allocator_reserved_bytes"]) << " (" << d["cuda_malloc_calls"] << " cudaMalloc calls)"
                << "; device free " << gib(d["device_free_bytes"]) << " of " << gib(d["device_total_bytes"]) << "\n";
    }
  }
  return 0;
}

// Writes a float32 [rows, cols] array as a NumPy .npy file (for parity checks against PyTorch).
static void write_npy(const std::string& path, const std::vector<float>& v, size_t rows, size_t cols) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  while ((10 + dict.size() + 1) % 64 != 0) dict.push_back(' ');
  dict.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(char(1)), out.push_back(char(0));
  out.push_back(char(dict.size() & 0xff)), out.push_back(char(dict.size() >> 8));
  out += dict;
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  write_file_atomic(path, out);
}

int cmd_score(int argc, char** argv) {
  const char* usage =
      "smoothread score --model DIR (--text TEXT | --file FILE | --ids FILE.json) [--json] [--logits-out FILE.npy]\n"
      "                 [--device cpu|cuda] [--threads N]\n"
      "Log-probability of every token given the ones before it (one forward pass), and the mean NLL.\n"
      "--ids: a JSON array of token ids instead of text (no tokenizer needed).\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--model", "--text", "--file", "--ids", "--logits-out", "--threads", "--device", "--window",
                         "--swa-layers"},
         {"--json"});
  set_threads(a);
  LoadedModel m = load_model(a, !a.has("--ids"));
  place_model(a, *m.model);
  std::vector<int32_t> ids;
  if (a.has("--ids")) {
    const json j = load_json_file(a.get("--ids"));
    if (!j.is_array()) fail(a.get("--ids"), "expected a JSON array of token ids");
    for (const json& v : j) {
      if (!v.is_number_integer()) fail(a.get("--ids"), "token ids must be integers");
      ids.push_back(v.get<int32_t>());
    }
  } else {
    std::string text = a.has("--file") ? read_file(a.get("--file")) : a.get("--text");
    ids = m.tokenizer->encode(text);
  }
  if (ids.size() < 1) fail(a.has("--ids") ? a.get("--ids") : a.has("--file") ? a.get("--file") : "--text", "is empty");
  const int V = m.model->config().vocab_size, n = int(ids.size());
  Session s(*m.model);
  std::vector<float> logits;
  s.prefill(ids, &logits);
  std::vector<double> lp;
  double nll = 0;
  for (int t = 1; t < n; ++t) {
    const float* z = logits.data() + size_t(t - 1) * V;
    double mx = *std::max_element(z, z + V), sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
    lp.push_back(double(z[ids[t]]) - mx - std::log(sum));
    nll -= lp.back();
  }
  if (a.has("--logits-out")) write_npy(a.get("--logits-out"), logits, size_t(n), size_t(V));
  double mean = n > 1 ? nll / (n - 1) : 0.0;
  if (a.has("--json")) std::cout << json{{"ids", ids}, {"logprobs", lp}, {"mean_nll", mean}, {"tokens", n}}.dump() << "\n";
  else std::cout << "tokens: " << n << "\nmean NLL: " << mean << " nats/token\nperplexity: " << std::exp(mean) << "\n";
  return 0;
}

int cmd_gen(int argc, char** argv) {
  const char* usage =
      "smoothread gen --task T --count N --seed S --out FILE.jsonl\n"
      "  synthetic tasks (passkey, niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, qa_hop):\n"
      "      --tokens N [--tokenizer FILE|DIR (default: byte-level)] [--depth D in 0..1 | --depth-grid G]\n"
      "      [--haystack FILE[,FILE...] (your text instead of the task's filler)]\n"
      "      [--format records|trajectory|or|nmr] [--chunk-tokens A:B (trajectory/nmr chunk size range)]\n"
      "      [--reject-distractors (trajectory/nmr: a chunk with another key's needle says so in Reason)]\n"
      "      [--chains N --hops H (vt)] [--values number|word|uuid|mixed|free (niah value type)]\n"
      "      [--phrasing ruler|varied|wide|open|heldout (passkey/niah sentences: RULER's, training pools of\n"
      "       paraphrases and keys, or a disjoint held-out pool)] [--number-noise P (after each haystack\n"
      "       sentence, with probability P, a keyless sentence with numbers: distractors for a reader)]\n"
      "  toy tasks (copy, recall, repeat): [--min-len A] [--max-len B]\n"
      "  text_mix (multilingual text for tokenizer checks; lines {\"text\": ...}): [--doc-bytes B (4096)]\n"
      "Same seed -> same bytes out.\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--task", "--count", "--seed", "--out", "--min-len", "--max-len", "--tokens", "--tokenizer",
                         "--depth", "--depth-grid", "--format", "--chunk-tokens", "--chains", "--hops", "--haystack", "--values",
                         "--doc-bytes", "--phrasing", "--number-noise"}, {"--reject-distractors"});
  std::string task = a.get("--task");
  int count = int(a.get_int("--count", 100));
  uint64_t seed = uint64_t(a.get_int("--seed", 0));
  if (count <= 0) fail("--count", "must be positive");
  std::string out;
  if (task == "copy" || task == "recall" || task == "repeat") {
    ToyTaskOptions o;
    o.task = task, o.count = count, o.seed = seed;
    o.min_len = int(a.get_int("--min-len", o.min_len));
    o.max_len = int(a.get_int("--max-len", o.max_len));
    for (auto& j : make_toy_task(o)) out += j.dump() + "\n";
  } else if (task == "text_mix") {
    const int bytes = int(a.get_int("--doc-bytes", 4096));
    if (bytes <= 0) fail("--doc-bytes", "must be positive");
    for (auto& t : make_text_mix(seed, count, bytes)) out += json{{"text", t}}.dump() + "\n";
  } else {
    std::unique_ptr<Tokenizer> tok = a.has("--tokenizer") ? Tokenizer::load(a.get("--tokenizer"))
                                                          : std::make_unique<ByteTokenizer>(ByteTokenizer::default_specials());
    SyntheticOptions o;
    o.task = task, o.count = count, o.seed = seed;
    o.tokens = int(a.get_int("--tokens", 4096));
    o.depth = a.get_num("--depth", -1);
    o.depth_grid = int(a.get_int("--depth-grid", 0));
    o.values = a.get_or("--values", "");
    if (!o.values.empty() && o.values != "number" && o.values != "word" && o.values != "uuid" && o.values != "mixed" && o.values != "free")
      fail("--values", "expected number, word, uuid, mixed or free");
    o.phrasing = a.get_or("--phrasing", "ruler");
    o.number_noise = a.get_num("--number-noise", 0.0);
    if (o.number_noise < 0 || o.number_noise > 1) fail("--number-noise", "must be in [0, 1]");
    if (a.has("--haystack")) o.haystack_files = split_list(a.get("--haystack"));  // FILE[,FILE...]
    if (o.depth_grid < 0) fail("--depth-grid", "must be >= 0");
    o.vt_chains = int(a.get_int("--chains", 1));
    o.vt_hops = int(a.get_int("--hops", 4));
    if (o.vt_chains < 1 || o.vt_hops < 0) fail("--chains/--hops", "need chains >= 1 and hops >= 0");
    std::string format = a.get_or("--format", "records");
    if (format != "records" && format != "trajectory" && format != "or" && format != "nmr")
      fail("--format", "expected records, trajectory, or or nmr (baseline training samples)");
    int cmin = 128, cmax = 512;
    if (a.has("--chunk-tokens")) {
      std::string r = a.get("--chunk-tokens");
      size_t colon = r.find(':');
      try {
        cmin = std::stoi(r.substr(0, colon));
        cmax = colon == std::string::npos ? cmin : std::stoi(r.substr(colon + 1));
      } catch (...) {
        fail("--chunk-tokens", "expected A:B, got '" + r + "'");
      }
      if (cmin < 16 || cmax < cmin) fail("--chunk-tokens", "need 16 <= A <= B");
    }
    std::vector<json> recs = make_synthetic(o, *tok);
    for (size_t i = 0; i < recs.size(); ++i) {
      if (format == "records") out += recs[i].dump() + "\n";
      else if (format == "or") out += make_or_sample(recs[i], false).dump() + "\n";
      else {
        json t = make_trajectory(recs[i], *tok, cmin, cmax, seed * 7919 + i, a.has("--reject-distractors"));
        if (format == "trajectory") out += t.dump() + "\n";
        else
          for (auto& s : make_nmr_samples(t)) out += s.dump() + "\n";
      }
    }
  }
  write_file_atomic(a.get("--out"), out);
  return 0;
}

}  // namespace sr::cli
