#include "train/data_loader.h"

#include <algorithm>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "core/io.h"
#include "reading/protocol.h"

namespace sr {

std::vector<Sample> load_jsonl_samples(const std::string& path, const Tokenizer* tok, float prompt_weight,
                                       float chunk_weight) {
  std::vector<Sample> out;
  auto need_tok = [&](const std::string& where) {
    if (!tok) fail(where, "text samples need a tokenizer");
  };
  for_each_jsonl(path, [&](json& j, const std::string& where) {
    Sample s;
    if (j.contains("ids")) {
      if (!j["ids"].is_array()) fail(where + ": field 'ids'", "expected a list of integers");
      for (auto& v : j["ids"]) {
        if (!v.is_number_integer()) fail(where + ": field 'ids'", "expected a list of integers");
        s.ids.push_back(v.get<int32_t>());
      }
      if (j.contains("weights")) {
        if (!j["weights"].is_array() || j["weights"].size() != s.ids.size())
          fail(where + ": field 'weights'", "expected a list of numbers as long as 'ids'");
        for (auto& v : j["weights"]) {
          if (!v.is_number()) fail(where + ": field 'weights'", "expected numbers");
          s.weights.push_back(v.get<float>());
        }
      } else {
        s.weights.assign(s.ids.size(), 1.0f);
      }
    } else if (j.contains("layout")) {  // OR / NMR baseline sample (protocol.md)
      need_tok(where);
      RenderedSequence r = render_baseline(j, *tok, Markers{}, chunk_weight, where);
      s.ids = std::move(r.ids);
      s.weights = std::move(r.weights);
    } else if (j.contains("chunks")) {  // Smooth Reading trajectory (protocol.md)
      need_tok(where);
      RenderedSequence r = render_trajectory(j, *tok, Markers{}, chunk_weight, where);
      s.ids = std::move(r.ids);
      s.weights = std::move(r.weights);
    } else if (j.contains("text")) {
      need_tok(where);
      s.ids = tok->encode(json_str(j, "text", where));
      s.weights.assign(s.ids.size(), 1.0f);
    } else if (j.contains("prompt") && j.contains("completion")) {
      need_tok(where);
      s.ids = tok->encode(json_str(j, "prompt", where));
      s.weights.assign(s.ids.size(), prompt_weight);
      auto c = tok->encode(json_str(j, "completion", where));
      s.ids.insert(s.ids.end(), c.begin(), c.end());
      s.weights.resize(s.ids.size(), 1.0f);
    } else {
      fail(where, "expected field 'ids', 'text', or 'prompt' + 'completion'");
    }
    if ((j.contains("text") || j.contains("prompt")) && tok) {
      int eos = tok->token_id("<|endoftext|>");
      if (eos >= 0) s.ids.push_back(eos), s.weights.push_back(1.0f);
    }
    if (s.ids.size() < 2) fail(where, "sample has fewer than 2 tokens");
    if (tok)
      for (int32_t id : s.ids)
        if (id < 0 || id >= tok->vocab_size()) fail(where + ": field 'ids'", "token id " + std::to_string(id) + " outside the vocabulary");
    out.push_back(std::move(s));
  });
  if (out.empty()) fail(path, "no samples");
  return out;
}

DataLoader::DataLoader(std::vector<Sample> samples, int batch_size, int seq_len, uint64_t seed, bool group_by_length)
    : samples_(std::move(samples)), batch_size_(batch_size), seq_len_(seq_len), rng_(seed), group_by_length_(group_by_length) {
  if (batch_size_ <= 0 || seq_len_ <= 0) fail("data loader", "batch_size and seq_len must be positive");
  shuffle();
}

double DataLoader::mean_trained_tokens() const {
  double sum = 0;
  for (auto& s : samples_) sum += double(std::min(int(s.ids.size()) - 1, seq_len_));
  return samples_.empty() ? 0.0 : sum / double(samples_.size());
}

void DataLoader::shuffle() {
  epoch_rng_ = rng_.state();
  order_.resize(samples_.size());
  std::iota(order_.begin(), order_.end(), 0);
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng_.below(i)]);
  if (!group_by_length_) return;
  // Length grouping: sort windows of 32 batches by length so each batch pads little, then
  // shuffle the order of the batches (seeded), so long and short batches still interleave.
  const size_t B = size_t(batch_size_), window = 32 * B;
  for (size_t w = 0; w < order_.size(); w += window) {
    auto first = order_.begin() + long(w), last = order_.begin() + long(std::min(order_.size(), w + window));
    std::stable_sort(first, last, [&](size_t a, size_t b) { return samples_[a].ids.size() < samples_[b].ids.size(); });
  }
  size_t nb = order_.size() / B;  // whole batches only; the ragged tail stays at the end
  std::vector<size_t> perm(nb);
  std::iota(perm.begin(), perm.end(), 0);
  for (size_t i = nb; i > 1; --i) std::swap(perm[i - 1], perm[rng_.below(i)]);
  std::vector<size_t> grouped;
  grouped.reserve(order_.size());
  for (size_t b : perm) grouped.insert(grouped.end(), order_.begin() + long(b * B), order_.begin() + long((b + 1) * B));
  grouped.insert(grouped.end(), order_.begin() + long(nb * B), order_.end());
  order_ = std::move(grouped);
}

void DataLoader::set_cursor(const Cursor& c) {
  epoch_ = c.epoch;
  index_ = c.index;
  rng_.set_state(c.rng);  // the state at the start of this epoch's shuffle; replay it
  shuffle();
}

Batch DataLoader::next() {
  Batch b;
  b.B = batch_size_;
  std::vector<const Sample*> picked;
  for (int i = 0; i < batch_size_; ++i) {
    if (index_ >= int64_t(order_.size())) {
      ++epoch_;
      index_ = 0;
      shuffle();
    }
    picked.push_back(&samples_[order_[size_t(index_++)]]);
  }
  for (auto* s : picked) b.T = std::max(b.T, std::min(int(s->ids.size()) - 1, seq_len_));
  b.inputs.assign(size_t(b.B) * b.T, 0);
  b.targets.assign(size_t(b.B) * b.T, -1);
  b.weights.assign(size_t(b.B) * b.T, 0.0f);
  for (int i = 0; i < b.B; ++i) {
    const Sample* s = picked[i];
    int n = std::min(int(s->ids.size()) - 1, seq_len_);
    for (int t = 0; t < n; ++t) {
      b.inputs[size_t(i) * b.T + t] = s->ids[t];
      b.targets[size_t(i) * b.T + t] = s->ids[t + 1];
      b.weights[size_t(i) * b.T + t] = s->weights[t + 1];
    }
    b.tokens += n;
  }
  return b;
}

}  // namespace sr
