// Model-directory loading and bad input: every malformed file gives an sr::Error naming the file
// and the field/tensor (and the CLI exits with code 2). CI also runs this binary under ASan/UBSan.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <cmath>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "model_fixtures.h"
#include "core/rng.h"
#include "models/model_dir.h"
#include "models/rwkv7_convert.h"
#include "models/torch_checkpoint.h"
#include "models/transformer.h"
#include "models/safetensors.h"
#include "ops/cuda/cuda_backend.h"
#include "test_util.h"

using namespace sr;
using namespace sr::test;

namespace {
std::string make_model_dir(const std::string& name) {
  std::string dir = temp_dir(name);
  ModelConfig c = tiny_config("fs", 5);
  c.vocab_size = 266;
  Transformer m(c);
  m.init_random(1);
  ByteTokenizer tok(ByteTokenizer::default_specials());
  save_model_dir(m, &tok, dir);
  return dir;
}

void write_bytes(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

// Expects load to throw an Error whose message contains every needle.
void expect_error(const std::string& dir, const std::vector<std::string>& needles) {
  try {
    load_model_dir(dir);
    ADD_FAILURE() << "no error for " << dir;
  } catch (const Error& e) {
    for (auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
  }
}

std::string header_file(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

json edit_config(const std::string& dir) { return load_json_file(dir + "/config.json"); }
void put_config(const std::string& dir, const json& j) { write_bytes(dir + "/config.json", j.dump()); }
}  // namespace

TEST(Loader, TruncatedSafetensors) {
  std::string dir = make_model_dir("trunc");
  std::string data = read_file(dir + "/model.safetensors");
  write_bytes(dir + "/model.safetensors", data.substr(0, data.size() - 100));
  expect_error(dir, {"model.safetensors", "data_offsets", "truncated"});
  write_bytes(dir + "/model.safetensors", data.substr(0, 5));
  expect_error(dir, {"model.safetensors", "truncated"});
}

TEST(Loader, HeaderLengthBeyondFile) {
  std::string dir = make_model_dir("hlen");
  std::string data = read_file(dir + "/model.safetensors");
  data[7] = char(0x7f);  // header length ~ 2^63
  write_bytes(dir + "/model.safetensors", data);
  expect_error(dir, {"model.safetensors", "header length", "exceeds the file size"});
}

TEST(Loader, InvalidHeaderJson) {
  std::string dir = make_model_dir("hjson");
  write_bytes(dir + "/model.safetensors", header_file("{\"a\": [1, 2", "xxxx"));
  expect_error(dir, {"model.safetensors", "not valid JSON"});
}

TEST(Loader, ShapeMismatchWithConfig) {
  std::string dir = make_model_dir("shape");
  json c = edit_config(dir);
  c["intermediate_size"] = 25;
  put_config(dir, c);
  expect_error(dir, {"model.safetensors", "mlp.gate_proj.weight", "does not match config.json"});
}

TEST(Loader, UnsupportedOrInconsistentDtype) {
  std::string dir = make_model_dir("dtype");
  write_bytes(dir + "/model.safetensors",
              header_file(R"({"model.embed_tokens.weight":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0')));
  expect_error(dir, {"model.safetensors", "model.embed_tokens.weight", "dtype", "I64"});
  write_bytes(dir + "/model.safetensors",
              header_file(R"({"model.embed_tokens.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')));
  expect_error(dir, {"model.embed_tokens.weight", "does not match shape"});
}

TEST(Loader, MissingTensor) {
  std::string dir = make_model_dir("missing");
  write_bytes(dir + "/model.safetensors", header_file("{}"));
  expect_error(dir, {"missing tensor", "model.embed_tokens.weight"});
}

TEST(Loader, MissingConfigFieldAndUnknownModelType) {
  std::string dir = make_model_dir("cfg");
  json c = edit_config(dir);
  c.erase("hidden_size");
  put_config(dir, c);
  expect_error(dir, {"config.json", "hidden_size"});
  c = edit_config(make_model_dir("cfg2"));
  c["model_type"] = "gpt_neox";
  put_config(dir, c);
  expect_error(dir, {"config.json", "model_type", "gpt_neox"});
  c["model_type"] = "qwen2";
  c["hidden_size"] = "sixteen";
  put_config(dir, c);
  expect_error(dir, {"config.json", "hidden_size", "integer"});
  write_bytes(dir + "/config.json", "{not json");
  expect_error(dir, {"config.json", "invalid JSON"});
}

TEST(Loader, ReadsBf16F16AndShards) {
  // bf16 1.5 = 0x3fc0 ; f16 1.5 = 0x3e00 ; f16 subnormal 2^-24 = 0x0001
  std::string data = {char(0xc0), char(0x3f), char(0x00), char(0x3e), char(0x01), char(0x00)};
  std::string dir = temp_dir("dtypes");
  write_bytes(dir + "/a.safetensors",
              header_file(R"({"x":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},"y":{"dtype":"F16","shape":[2],"data_offsets":[2,6]}})", data));
  SafeTensorsFile f(dir + "/a.safetensors");
  EXPECT_EQ(f.load("x").to_vector(), std::vector<float>{1.5f});
  EXPECT_EQ(f.load("y").to_vector(), (std::vector<float>{1.5f, std::ldexp(1.0f, -24)}));
  // Sharded: split a saved model over two shards with an index.
  std::string md = make_model_dir("shards");
  LoadedModel whole = load_model_dir(md);
  SafeTensorsFile full(md + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> a, b;
  json wm;
  int i = 0;
  for (auto& [name, ti] : full.tensors()) {
    (i++ % 2 ? a : b).emplace_back(name, full.load(name));
    wm[name] = (i % 2) ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors(md + "/model-00001-of-00002.safetensors", a);
  write_safetensors(md + "/model-00002-of-00002.safetensors", b);
  std::remove((md + "/model.safetensors").c_str());
  write_bytes(md + "/model.safetensors.index.json", json{{"metadata", json::object()}, {"weight_map", wm}}.dump());
  LoadedModel sharded = load_model_dir(md);
  EXPECT_EQ(0, std::memcmp(sharded.model->params(), whole.model->params(), whole.model->num_params() * 4));
}

TEST(Loader, ConfigDerivesLayerTypesLikeTransformers) {
  json j = tiny_config("ff").to_json();
  j.erase("layer_types");
  j["num_hidden_layers"] = 4;
  j["use_sliding_window"] = true;
  j["sliding_window"] = 7;
  j["max_window_layers"] = 2;
  ModelConfig c = ModelConfig::from_json(j, "cfg");
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(c.sliding_window, 7);
  j["use_sliding_window"] = false;  // transformers nulls the window -> all full
  EXPECT_FALSE(ModelConfig::from_json(j, "cfg").any_sliding());
  // rope_theta at top level (4.x) or inside rope_parameters (5.x)
  j.erase("rope_parameters");
  j["rope_theta"] = 12345.0;
  EXPECT_FLOAT_EQ(ModelConfig::from_json(j, "cfg").rope_theta, 12345.f);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 777.0}};
  EXPECT_FLOAT_EQ(ModelConfig::from_json(j, "cfg").rope_theta, 777.f);
  j.erase("head_dim");
  EXPECT_EQ(ModelConfig::from_json(j, "cfg").head_dim, 16 / 4);
}

TEST(Tokenizer, ByteLevelRoundTripAndSpecials) {
  ByteTokenizer t(ByteTokenizer::default_specials());
  std::string text = "héllo <|query|>wörld\n\x01\xff<READ><|endoftext|>";
  auto ids = t.encode(text);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(ids[0], 'h');
  int q = t.token_id("<|query|>");
  EXPECT_EQ(q, 257);
  EXPECT_NE(std::find(ids.begin(), ids.end(), q), ids.end());
  EXPECT_EQ(ids.back(), t.token_id("<|endoftext|>"));
  auto raw = t.encode("<|query|>", false);
  EXPECT_EQ(raw.size(), 9u);
  std::string dir = temp_dir("tok");
  write_bytes(dir + "/tokenizer.json", t.to_json().dump());
  auto l = Tokenizer::load(dir);
  EXPECT_EQ(l->encode(text), ids);
  EXPECT_EQ(byte_level_symbol(' '), "\xc4\xa0");  // GPT-2's 'Ġ'
  json bad = t.to_json();
  bad["model"]["merges"] = json::array({"a b"});
  write_bytes(dir + "/tokenizer.json", bad.dump());
  EXPECT_THROW(Tokenizer::load(dir), Error);
}

#ifdef SMOOTHREAD_CLI
TEST(Loader, CliExitsWithCode2AndNamesTheFile) {
  std::string dir = make_model_dir("cli");
  json c = edit_config(dir);
  c.erase("num_attention_heads");
  put_config(dir, c);
  std::string err = dir + "/err.txt";
  std::string cmd = std::string(SMOOTHREAD_CLI) + " info --model " + dir + " 2> " + err;
  int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  std::string msg = read_file(err);
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_attention_heads"), std::string::npos) << msg;
  rc = std::system((std::string(SMOOTHREAD_CLI) + " generate --model /nonexistent --prompt x 2> " + err).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  rc = std::system((std::string(SMOOTHREAD_CLI) + " info --bogus 2> " + err).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  // --device: an unknown name lists the choices; cuda without a CUDA build or GPU says so
  std::string good = make_model_dir("cli_device");
  rc = std::system((std::string(SMOOTHREAD_CLI) + " info --model " + good + " --device tpu 2> " + err).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  EXPECT_NE(read_file(err).find("choose cpu, cuda or ref"), std::string::npos) << read_file(err);
  if (!cuda_built() || !cuda::available()) {
    rc = std::system((std::string(SMOOTHREAD_CLI) + " info --model " + good + " --device cuda 2> " + err).c_str());
    EXPECT_EQ(WEXITSTATUS(rc), 2);
    std::string m = read_file(err);
    EXPECT_TRUE(m.find("without CUDA") != std::string::npos || m.find("no CUDA GPU") != std::string::npos) << m;
  }
}
#endif

TEST(Loader, CorruptedBytesNeverCrash) {
  // Flip random bytes in the header region and truncate at random points: every outcome must be a
  // clean load or an sr::Error (ASan/UBSan run this too).
  std::string dir = make_model_dir("fuzz");
  const std::string orig = read_file(dir + "/model.safetensors");
  Rng r(123);
  int errors = 0;
  for (int it = 0; it < 200; ++it) {
    std::string d = orig;
    if (it % 2) {
      for (int k = 0; k < 3; ++k) d[8 + r.below(std::min<uint64_t>(d.size() - 8, 600))] = char(r.below(256));
    } else {
      d.resize(r.below(d.size()));
    }
    write_bytes(dir + "/model.safetensors", d);
    try {
      load_model_dir(dir);
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 100);
}

// ---- BlinkDL RWKV-7 .pth checkpoints (tests/data/rwkv7_pth, made by tests/parity/make_rwkv7_pth.py) ----
namespace {
const std::string kPthDir = std::string(SMOOTHREAD_SOURCE_DIR) + "/tests/data/rwkv7_pth";
}

// The converted directory holds exactly the expected fla-layout tensors, bit for bit (bf16-stored
// matrices widened exactly, LoRAs transposed, [1,1,C] vectors flattened, layer 0's unused v-LoRA
// dropped), and loads as a model that runs.
TEST(RwkvPth, ConvertsToTheFlaLayoutBitwise) {
  const std::string out = temp_dir("pth") + "/model";
  ModelConfig c = convert_rwkv7_pth(kPthDir + "/tiny.pth", out);
  EXPECT_EQ(c.model_type, "rwkv7");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 50);
  SafeTensorsFile got(out + "/model.safetensors"), want(kPthDir + "/expected.safetensors");
  std::vector<std::string> names;
  for (auto& [n, info] : want.tensors()) names.push_back(n);
  ASSERT_EQ(got.tensors().size(), want.tensors().size());
  for (const std::string& n : names) {
    ASSERT_TRUE(got.has(n)) << n;
    Tensor a = got.load(n), b = want.load(n);
    ASSERT_EQ(a.shape(), b.shape()) << n;
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float))) << n;
  }
  LoadedModel m = load_model_dir(out, false);
  std::vector<int32_t> ids = {1, 5, 9, 2};
  std::vector<float> logits(size_t(4) * 50);
  std::vector<LayerKVCache> caches = m.model->empty_caches();
  m.model->forward_cached(ids.data(), 4, caches, logits.data(), true);
  for (float x : logits) EXPECT_TRUE(std::isfinite(x));
  EXPECT_THROW(convert_rwkv7_pth(kPthDir + "/tiny.pth", out), Error);  // never overwrites
}

// A pickle that calls os.system is refused at its GLOBAL, before anything could run; truncated and
// byte-flipped archives fail with an sr::Error naming the file, never a crash (ASan build too).
TEST(RwkvPth, RefusesCodeAndSurvivesCorruption) {
  const std::string d = temp_dir("pthbad");
  try {
    convert_rwkv7_pth(kPthDir + "/evil.pth", d + "/evil");
    FAIL() << "evil.pth was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("os system"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nothing was executed"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::ifstream(d + "/evil/config.json").good());
  std::ifstream f(kPthDir + "/tiny.pth", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; };
  write(d + "/half.pth", bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(read_torch_checkpoint(d + "/half.pth"), Error);
  Rng rng(5);
  int accepted = 0;
  for (int trial = 0; trial < 200; ++trial) {  // flip bytes anywhere, mostly in data.pkl near the start
    std::string b = bytes;
    for (int k = 0; k < 3; ++k) {
      const size_t at = trial % 2 ? size_t(rng.below(std::min<uint64_t>(b.size(), 4096))) : size_t(rng.below(b.size()));
      b[at] = char(rng.below(256));
    }
    write(d + "/flip.pth", b);
    try {
      read_torch_checkpoint(d + "/flip.pth");
      ++accepted;  // a flip inside tensor data leaves a valid checkpoint
    } catch (const Error&) {
    }
  }
  EXPECT_LT(accepted, 200);
}

#ifdef SMOOTHREAD_CLI
TEST(RwkvPth, CliConvertsAndRefuses) {
  const std::string d = temp_dir("pthcli"), cli = SMOOTHREAD_CLI, err = d + "/err.txt";
  int rc = std::system((cli + " convert --from rwkv7-pth " + kPthDir + "/tiny.pth --out " + d + "/m --json > " + d +
                        "/out.json 2> " + err).c_str());
  ASSERT_EQ(WEXITSTATUS(rc), 0) << read_file(err);
  EXPECT_EQ(json::parse(read_file(d + "/out.json"))["layers"], 2);
  rc = std::system((cli + " info --model " + d + "/m > /dev/null 2> " + err).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 0) << read_file(err);
  rc = std::system((cli + " convert --from rwkv7-pth " + kPthDir + "/evil.pth --out " + d + "/e 2> " + err).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  EXPECT_NE(read_file(err).find("refusing"), std::string::npos) << read_file(err);
  rc = std::system((cli + " convert --from rwkv7-pth --out " + d + "/x 2> " + err).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  EXPECT_NE(read_file(err).find("needs the .pth file"), std::string::npos) << read_file(err);
}
#endif
