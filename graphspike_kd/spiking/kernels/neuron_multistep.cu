// Multi-step IF / LIF / PLIF kernels: one thread per neuron, a loop over T inside the thread (element
// t * N + i, so every time step is a coalesced row). The per-neuron arithmetic lives in neuron_math.cuh.
//
// Instantiated by name (NVRTC name expressions, see sources.py:kernel_names):
//   gskd_neuron_forward<S, HARD, DECAY_INPUT>
//   gskd_neuron_backward<S, SG, HARD, DETACH, DECAY_INPUT, K_GRAD>
// with S = float or gskd_half (fp16 storage; arithmetic in fp32 registers, one rounding per store).
// h_seq is always fp32 so the backward sees exactly the h the forward fired on (an fp16 h could round
// across the threshold and flip a recomputed spike).
#include "neuron_math.cuh"

#ifndef GSKD_THREADS
#define GSKD_THREADS 256
#endif

// fp16 storage without cuda_fp16.h (which NVRTC may not find): the bits, converted with PTX cvt.
struct gskd_half {
  unsigned short bits;
};

namespace gskd {
template <>
struct Storage<gskd_half> {
  template <typename R>
  __device__ __forceinline__ static R load(gskd_half value) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(value.bits));
    return static_cast<R>(f);
  }
  template <typename R>
  __device__ __forceinline__ static gskd_half store(R value) {
    gskd_half out;
    const float f = static_cast<float>(value);
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out.bits) : "f"(f));
    return out;
  }
};
}  // namespace gskd

// decay points at one fp32 value on the device (PLIF's sigmoid(w) stays on the GPU: no host sync).
template <typename S, bool HARD, bool DECAY_INPUT>
__global__ void __launch_bounds__(GSKD_THREADS)
gskd_neuron_forward(const S* __restrict__ x, const S* __restrict__ v_init, const float* __restrict__ decay,
                    S* __restrict__ spikes, float* __restrict__ h_seq, S* __restrict__ v_last, float v_th,
                    float v_reset, long long T, long long N) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  gskd::forward_neuron<HARD, DECAY_INPUT, S, float>(x, v_init, spikes, h_seq, v_last, T, N, i, decay[0], v_th,
                                                    v_reset);
}

// Block-wide sum (blockDim.x a multiple of 32, every thread of the block calls it).
__device__ __forceinline__ float gskd_block_sum(float value) {
  __shared__ float warp_sums[GSKD_THREADS / 32];
  const unsigned lane = threadIdx.x & 31u;
  const unsigned warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  const unsigned n_warps = blockDim.x >> 5;
  value = (threadIdx.x < n_warps) ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// With K_GRAD, grad_decay_partial[blockIdx.x] receives the block's sum of dL/dk (the caller sums the
// gridDim.x partials: deterministic, no atomics).
template <typename S, int SG, bool HARD, bool DETACH, bool DECAY_INPUT, bool K_GRAD>
__global__ void __launch_bounds__(GSKD_THREADS)
gskd_neuron_backward(const S* __restrict__ grad_spikes, const S* __restrict__ grad_v_last,
                     const float* __restrict__ h_seq, const S* __restrict__ x, const S* __restrict__ v_init,
                     const float* __restrict__ decay, S* __restrict__ grad_x, S* __restrict__ grad_v_init,
                     float* __restrict__ grad_decay_partial, float v_th, float v_reset, float alpha, long long T,
                     long long N) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  float gk = 0.0f;
  if (i < N) {
    gk = gskd::backward_neuron<SG, HARD, DETACH, DECAY_INPUT, K_GRAD, S, float>(
        grad_spikes, grad_v_last, h_seq, x, v_init, grad_x, grad_v_init, T, N, i, decay[0], v_th, v_reset,
        alpha);
  }
  if (K_GRAD) {
    gk = gskd_block_sum(gk);
    if (threadIdx.x == 0) grad_decay_partial[blockIdx.x] = gk;
  }
}
