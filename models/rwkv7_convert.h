// BlinkDL's RWKV-7 (x070) `.pth` checkpoints -> an fla-hub-layout model directory (config.json,
// model.safetensors, and the tokenizer when one is given). The .pth is read by the safe reader in
// models/torch_checkpoint.h (nothing is executed); the shapes give the config (vocabulary, width,
// layers, head size, LoRA ranks, channel-mix width), BlinkDL's [in, out] LoRA matrices are
// transposed to fla's nn.Linear [out, in], and the weights are kept at the precision they were
// stored in (bf16 or fp16 values widened exactly to fp32).
#pragma once
#include <string>

#include "models/config.h"

namespace sr {

// Writes out_dir (a new directory, written atomically); tokenizer (optional): a tokenizer.json or
// rwkv_vocab_v20230424.txt copied into it. Returns the config. Throws sr::Error naming the tensor.
ModelConfig convert_rwkv7_pth(const std::string& pth, const std::string& out_dir, const std::string& tokenizer = "");

}  // namespace sr
