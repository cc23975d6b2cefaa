// Launch order of the attention kernels' blocks. Each kernel runs a 1-D grid of tiles x heads x
// batch blocks; the hardware starts blocks in increasing id as earlier ones finish, so the map from
// id to work decides how well the last wave fills the GPU. Under causal masking a block's work
// grows with its tile's distance from the diagonal (the forward's last query tiles, the
// backward's first key tiles), so the kernels number their tiles heaviest first (tile 0).
// Plain C++ (host and device), so the CPU tests check it without a GPU.
#pragma once

#if defined(__CUDACC__)
#define SR_HOST_DEVICE __host__ __device__
#else
#define SR_HOST_DEVICE
#endif

namespace sr::cuda {

enum AttnBlockOrder : int {
  kTilesFastest = 0,   // id = tile + tiles * (head + heads * batch): each head's tiles, heaviest first, then the next head's
  kHeaviestFirst = 1,  // one section of every (head, batch): every head's heaviest tile, then every head's next
  kSectioned = 2,      // sections of attn_section() heads: enough heads to pack the last wave, few enough to share L2
};

struct AttnBlockPlace {
  unsigned tile, head, batch;  // tile 0 = the heaviest of its head (unsigned, like CUDA's block indices)
};

// The place of the block launched id-th (0-based) among tiles x heads x batch blocks when the
// heads x batch (head, batch) pairs are taken in sections of `section` pairs (the last section also
// takes the remainder, so no section is shorter than `section`: a short last section would end the
// grid on its heaviest tiles): a section's blocks run tile by tile, each tile over the section's
// pairs. section 1 is kTilesFastest's order, section >= heads * batch kHeaviestFirst's.
SR_HOST_DEVICE inline AttnBlockPlace attn_block_place(unsigned id, unsigned tiles, unsigned heads, unsigned batch,
                                                      unsigned section) {
  const unsigned pairs = heads * batch;
  if (section > pairs) section = pairs;
  if (section < 1) section = 1;
  const unsigned sections = pairs / section, last = sections - 1;
  unsigned sec = id / (section * tiles);
  if (sec > last) sec = last;
  const unsigned first = sec * section, n = sec == last ? pairs - first : section;  // pairs in this section
  const unsigned r = id - first * tiles, pair = first + r % n;
  AttnBlockPlace p;
  p.tile = r / n, p.head = pair % heads, p.batch = pair / heads;
  return p;
}

// The section (in (head, batch) pairs) that `order` runs a grid of tiles x pairs blocks with on a
// GPU of `sms` multiprocessors. kSectioned: the fewest pairs whose blocks fill the GPU twice over, so
// the last section runs at least as long as its heaviest tile (a tile's work grows with its distance
// from the diagonal: the heaviest is ~2x the mean), while the blocks running at once share few
// heads' K/V (forward) or Q/dO/dQ (backward) in L2. At 64k tokens a head's K and V are 32 MB, and
// every head at once (kHeaviestFirst) is 2-4% slower than one head at a time there; at 4k every
// head at once is 1.10x (forward) and 1.26x (the 3b model's shape) faster (docs/PERF.md).
inline unsigned attn_section(int order, unsigned tiles, unsigned pairs, unsigned sms) {
  if (order == kHeaviestFirst) return pairs;
  if (order == kSectioned) {
    const unsigned t = tiles > 0 ? tiles : 1, want = (2 * sms + t - 1) / t;
    return want < 1 ? 1 : want > pairs ? pairs : want;
  }
  return 1;
}

}  // namespace sr::cuda
