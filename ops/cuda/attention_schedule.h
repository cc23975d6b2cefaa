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
  kTilesFastest = 0,  // id = tile + tiles * (head + heads * batch): each head's tiles, heaviest first, then the next head's
  kHeaviestFirst = 1,  // id = (head + heads * batch) + heads * batch * tile: every head's heaviest tile, then the next
};

struct AttnBlockPlace {
  unsigned tile, head, batch;  // tile 0 = the heaviest of its head (unsigned, like CUDA's block indices)
};

// The place of the block launched id-th (0-based) among tiles x heads x batch blocks.
SR_HOST_DEVICE inline AttnBlockPlace attn_block_place(unsigned id, unsigned tiles, unsigned heads, unsigned batch,
                                                      int order) {
  AttnBlockPlace p;
  if (order == kHeaviestFirst) {
    const unsigned hb = heads * batch, rest = id % hb;
    p.tile = id / hb, p.head = rest % heads, p.batch = rest / heads;
  } else {
    const unsigned rest = id / tiles;
    p.tile = id % tiles, p.head = rest % heads, p.batch = rest / heads;
  }
  return p;
}

}  // namespace sr::cuda
