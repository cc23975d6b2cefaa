// `smoothread` command-line tool: a thin layer over the library. Bad input -> message naming the
// file/field on stderr and exit code 2.
#include <cstring>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "eval/bench.h"
#include "ops/cpu/blas_kernels.h"

static const char* kUsage = R"(smoothread: recurrent-LM engine for Smooth Reading

usage: smoothread <command> [options]   (smoothread <command> --help for its options; --version)

commands:
  read       --model DIR (--doc FILE | stdin) --question Q [--mode emr|nmr|or|or-context-first] [--json]
             [--trace F.jsonl] [--batch IN.jsonl --out OUT.jsonl]   Smooth Reading (see read --help)
  eval       --model DIR --data F.jsonl [--mode M] | --score-only --pred F.jsonl   read + score (RULER)
  longbench  --model DIR --data-dir D --config-dir C --out DIR [--mode or|emr|nmr] [--e]
             | --score-only --pred-dir DIR   LongBench predictions + the official scores
  chunk      --model DIR --doc FILE --chunk-tokens C [--json]   show how a document is chunked
  train      --config train.json [--resume] [--quiet]      train a model (JSON line per logged step)
  generate   --model DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
             [--seed S] [--json]                         generate text
  tokenize   --tokenizer FILE|DIR [--decode] [--jsonl]   stdin text -> JSON ids (or ids -> text); BPE
             tokenizer.json, RWKV World rwkv_vocab_*.txt, or smoothread's byte-level
  info       --model DIR [--json]                        architecture, parameters, layer types
  convert    --model DIR --out NEW --window W [--swa-layers all|0,2,4-7]   run attention with a window
             (or --window W on read/eval/longbench/generate/score/info, without a copy)
  score      --model DIR (--text T | --file F | --ids F.json) [--json] [--logits-out F.npy]   per-token log-probs
  gen        --task T --count N --seed S --out FILE.jsonl   synthetic tasks, trajectories, toy data
  bench      (--model DIR | --config FILE) [-p 512] [-n 128] [--read 4k,64k --mode emr,or] [--train 4k]
             [--device cuda] [--format md|csv|json]   prefill/decode/reading/training speed and memory
)";

int main(int argc, char** argv) {
  sr::cpu::use_best_blas_kernels(argv);  // OpenBLAS's AVX2 / AVX-512 kernels where it missed the CPU
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "--version") {
    std::cout << "smoothread " << sr::build_version() << "\n";
    return 0;
  }
  try {
    if (cmd == "train") return sr::cli::cmd_train(argc, argv);
    if (cmd == "generate") return sr::cli::cmd_generate(argc, argv);
    if (cmd == "tokenize") return sr::cli::cmd_tokenize(argc, argv);
    if (cmd == "info") return sr::cli::cmd_info(argc, argv);
    if (cmd == "gen") return sr::cli::cmd_gen(argc, argv);
    if (cmd == "score") return sr::cli::cmd_score(argc, argv);
    if (cmd == "read") return sr::cli::cmd_read(argc, argv);
    if (cmd == "chunk") return sr::cli::cmd_chunk(argc, argv);
    if (cmd == "eval") return sr::cli::cmd_eval(argc, argv);
    if (cmd == "longbench") return sr::cli::cmd_longbench(argc, argv);
    if (cmd == "convert") return sr::cli::cmd_convert(argc, argv);
    if (cmd == "bench") return sr::cli::cmd_bench(argc, argv);
    std::cerr << "error: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
  } catch (const sr::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
}
