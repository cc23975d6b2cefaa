// wgmma layout probe (sm_90a): which (lbo, sbo) the unswizzled descriptors of ops/cuda/wgmma.cuh take
// for a K-major A/B (S = Q K^T's operands) and an M/N-major B (O += P V's V), one warpgroup, one
// [64 x 128] product against a double-precision reference. Not part of the build:
//   nvcc -O2 -arch=sm_90a -I. -o wgmma_layout_probe bench/wgmma_layout_probe.cu && ./wgmma_layout_probe
// Expected: err 0 for the first and third lines; the swapped M/N-major case faults (illegal address),
// which ends the run (docs/data/wgmma-layout-probe-h200.txt: an earlier version that also tried an
// M/N-major A after that fault, whose results the fault voids).
#include <cuda_bf16.h>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>
#include "ops/cuda/wgmma.cuh"
using namespace sr::cuda;
using bf16 = __nv_bfloat16;
__host__ __device__ inline int coff(int r, int c, int CG) { return ((r >> 3) * CG + (c >> 3)) * 64 + (r & 7) * 8 + (c & 7); }  // elements
__device__ inline uint32_t pk(bf16 a, bf16 b) { __nv_bfloat162 v; v.x = a; v.y = b; return *reinterpret_cast<uint32_t*>(&v); }
__global__ void probe(int test, const bf16* A, const bf16* B, float* D, int lbo_a, int sbo_a, int lbo_b, int sbo_b) {
  __shared__ __align__(128) bf16 sA[64 * 128];
  __shared__ __align__(128) bf16 sB[128 * 128];
  const int t = threadIdx.x, w = t / 32, lane = t % 32, g = lane / 4, tg = lane % 4;
  // A global [64][128] (m, k); B global: test 1 [128 n][128 k], test 2 [128 k][128 n]
  for (int i = t; i < 64 * 128; i += 128) {
    sA[coff(i / 128, i % 128, 16)] = A[i];
  }
  for (int i = t; i < 128 * 128; i += 128) sB[coff(i / 128, i % 128, 16)] = B[i];
  fence_proxy_async();
  __syncthreads();
  float d[64];
  for (int i = 0; i < 64; ++i) d[i] = 0.f;
  wgmma_fence();
  for (int kk = 0; kk < 8; ++kk) {
    if (test == 1) wgmma_ss<0, 0>(d, wgmma_desc(sA + kk * 16 * 8, lbo_a, sbo_a), wgmma_desc(sB + kk * 16 * 8, lbo_b, sbo_b), 1);
    if (test == 2) {
      uint32_t a[4];
      const bf16* r0 = A + (16 * w + g) * 128 + 16 * kk + 2 * tg;
      const bf16* r1 = r0 + 8 * 128;
      a[0] = pk(r0[0], r0[1]); a[1] = pk(r1[0], r1[1]); a[2] = pk(r0[8], r0[9]); a[3] = pk(r1[8], r1[9]);
      wgmma_rs<1>(d, a, wgmma_desc(sB + kk * 2 * 16 * 64, lbo_b, sbo_b), 1);
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  for (int j = 0; j < 16; ++j)
    for (int e = 0; e < 4; ++e) D[(16 * w + g + 8 * (e / 2)) * 128 + 8 * j + 2 * tg + e % 2] = d[4 * j + e];
}
int main() {
  std::vector<bf16> A(64 * 128), B(128 * 128);
  std::vector<float> fa(A.size()), fb(B.size());
  srand(1);
  for (size_t i = 0; i < A.size(); ++i) { A[i] = __float2bfloat16((rand() % 17 - 8) / 8.0f); fa[i] = __bfloat162float(A[i]); }
  for (size_t i = 0; i < B.size(); ++i) { B[i] = __float2bfloat16((rand() % 17 - 8) / 8.0f); fb[i] = __bfloat162float(B[i]); }
  bf16 *dA, *dB; float* dD;
  cudaMalloc(&dA, A.size() * 2); cudaMalloc(&dB, B.size() * 2); cudaMalloc(&dD, 64 * 128 * 4);
  cudaMemcpy(dA, A.data(), A.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dB, B.data(), B.size() * 2, cudaMemcpyHostToDevice);
  std::vector<float> D(64 * 128);
  struct C { int test, la, sa, lb, sb; const char* what; } cs[] = {
      {1, 128, 2048, 128, 2048, "SS K-major: lbo=K-dir, sbo=MN-dir"},
      {1, 2048, 128, 2048, 128, "SS K-major: swapped"},
      {2, 0, 0, 2048, 128, "RS, B MN-major: lbo=K-dir(2048), sbo=N-dir(128)"},
      {2, 0, 0, 128, 2048, "RS, B MN-major: swapped"},
  };
  for (auto& c : cs) {
    cudaMemset(dD, 0, 64 * 128 * 4);
    probe<<<1, 128>>>(c.test, dA, dB, dD, c.la, c.sa, c.lb, c.sb);
    cudaError_t e = cudaDeviceSynchronize();
    cudaMemcpy(D.data(), dD, D.size() * 4, cudaMemcpyDeviceToHost);
    double err = 0;
    for (int m = 0; m < 64; ++m)
      for (int n = 0; n < 128; ++n) {
        double ref = 0;
        for (int k = 0; k < 128; ++k) ref += double(fa[m * 128 + k]) * (c.test == 2 ? fb[k * 128 + n] : fb[n * 128 + k]);
        err = fmax(err, fabs(ref - D[m * 128 + n]));
      }
    printf("test %d %-55s err %g (%s)\n", c.test, c.what, err, cudaGetErrorString(e));
  }
}
