// Builds a tiny random Qwen2-style model with the library API, greedy-decodes a few tokens,
// snapshots and restores the session, and checks the continuation repeats exactly.
#include <iostream>

#include "infer/session.h"
#include "models/tokenizer.h"
#include "models/transformer.h"
#include "ops/cpu/blas_kernels.h"

int main(int, char** argv) {
  sr::cpu::use_best_blas_kernels(argv);  // OpenBLAS's AVX2 / AVX-512 kernels where it missed the CPU
  sr::ByteTokenizer tok(sr::ByteTokenizer::default_specials());
  sr::ModelConfig c;
  c.vocab_size = tok.vocab_size(), c.hidden_size = 32, c.intermediate_size = 64, c.num_layers = 2;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 8, c.sliding_window = 16;
  c.layer_sliding = {true, false};
  sr::Transformer model(c);
  model.init_random(7);
  sr::Session s(model);
  s.prefill(tok.encode("<|query|>hello"));
  auto snap = s.snapshot();
  auto a = s.generate(8);
  s.restore(snap);
  auto b = s.generate(8);
  std::cout << "params " << c.num_parameters() << ", generated " << a.size() << " tokens, replay "
            << (a == b ? "identical" : "DIFFERENT") << "\n";
  return a == b ? 0 : 1;
}
