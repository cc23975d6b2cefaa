// bfloat16 <-> float32 on the host: bf16 is the upper 16 bits of an fp32.
#pragma once
#include <cstdint>
#include <cstring>

namespace sr {

// Exact: the 16 bits become the upper half of the fp32.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays (quiet) NaN, infinities stay infinite.
inline uint16_t bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace sr
