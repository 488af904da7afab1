// Per-neuron arithmetic of the multi-step IF / LIF / PLIF neuron, shared by the CUDA kernels
// (neuron_multistep.cu, compiled by NVRTC through CuPy or by nvcc) and by the host test harness
// (host_harness.cpp, compiled by g++), so the CPU tests exercise the very code the GPU runs.
//
// Model (v_r = v_reset for a hard reset, 0 for a soft reset; k is the decay factor):
//   charge  decay_input:   h[t] = v[t-1] + k * (x[t] - (v[t-1] - v_r))
//           !decay_input:  h[t] = v[t-1] - k * (v[t-1] - v_r) + x[t]
//   fire    s[t] = 1 if h[t] - v_th >= 0 else 0        (backward: surrogate'(h[t] - v_th))
//   reset   soft: v[t] = h[t] - v_th * s[t]            hard: v[t] = h[t] * (1 - s[t]) + v_reset * s[t]
// LIF: k = 1 / tau; PLIF: k = sigmoid(w) (the caller maps w -> k); IF: k = 0 with decay_input = false.
//
// Reverse-time recursion (gv = dL/dv[t], starting from dL/dv_last; one step per t = T-1 .. 0):
//   sg   = surrogate'(h[t] - v_th),  s = H(h[t] - v_th)
//   dv/dh: soft 1 - v_th * sg,  hard (1 - s) + (v_reset - h[t]) * sg   (the sg terms vanish with detach_reset)
//   gh   = grad_s[t] * sg + gv * dv/dh                     (= dL/dh[t])
//   grad_x[t] = gh * (decay_input ? k : 1)
//   grad_k   += gh * (decay_input ? x[t] - (v[t-1] - v_r) : -(v[t-1] - v_r))
//   gv   = gh * (1 - k)                                    (= dL/dv[t-1]); after t = 0 it is dL/dv_init
// v[t-1] is recomputed from h[t-1] (exactly: same arithmetic as the forward), so the forward only has
// to keep h. All arithmetic is written in the operation order of the formulas above; compile without
// FMA contraction (nvcc/NVRTC --fmad=false, g++ -ffp-contract=off) to match a torch step loop bit for bit.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GSKD_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define GSKD_HD inline
#endif

namespace gskd {

// Surrogate ids: the kernel_id of the surrogate classes in graphspike_kd/spiking/surrogate.py (the one table;
// tests/spiking/test_backend_layout.py parses this enum and compares).
enum SurrogateKind : int {
  kSigmoid = 0,
  kATan = 1,
  kRectangle = 2,
  kTriangle = 3,
  kFastSigmoid = 4,
};

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
GSKD_HD float math_exp(float x) { return expf(x); }
GSKD_HD double math_exp(double x) { return exp(x); }
GSKD_HD float math_abs(float x) { return fabsf(x); }
GSKD_HD double math_abs(double x) { return fabs(x); }
#else
GSKD_HD float math_exp(float x) { return std::exp(x); }
GSKD_HD double math_exp(double x) { return std::exp(x); }
GSKD_HD float math_abs(float x) { return std::fabs(x); }
GSKD_HD double math_abs(double x) { return std::fabs(x); }
#endif

// Loading and storing a tensor element: identity casts for float / double. neuron_multistep.cu adds a
// specialisation for fp16 storage (values are computed in fp32 registers and rounded once on store).
template <typename S>
struct Storage {
  template <typename R>
  GSKD_HD static R load(S value) { return static_cast<R>(value); }
  template <typename R>
  GSKD_HD static S store(R value) { return static_cast<S>(value); }
};

// Surrogate derivative g'(x) at x = h - v_th.
//   sigmoid       alpha * g * (1 - g),  g = sigmoid(alpha * x)        (default alpha 4)
//   atan          (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)          (default alpha 2)
//   rectangle     alpha * 1[|x| < 1 / (2 * alpha)]                    (default alpha 1)
//   triangle      alpha^2 * max(0, 1 / alpha - |x|)                   (default alpha 1)
//   fast_sigmoid  1 / (1 + alpha * |x|)^2                             (default alpha 25)
template <int SG, typename R>
GSKD_HD R surrogate_grad(R x, R alpha) {
  if (SG == kSigmoid) {
    const R g = R(1) / (R(1) + math_exp(-(alpha * x)));
    return alpha * g * (R(1) - g);
  } else if (SG == kATan) {
    const R z = R(1.57079632679489661923) * alpha * x;
    return alpha / R(2) / (R(1) + z * z);
  } else if (SG == kRectangle) {
    return math_abs(x) < R(1) / (R(2) * alpha) ? alpha : R(0);
  } else if (SG == kTriangle) {
    const R d = R(1) / alpha - math_abs(x);
    return d > R(0) ? alpha * alpha * d : R(0);
  } else {  // kFastSigmoid
    const R d = R(1) + alpha * math_abs(x);
    return R(1) / (d * d);
  }
}

template <bool DECAY_INPUT, typename R>
GSKD_HD R charge(R v, R x, R k, R v_r) {
  return DECAY_INPUT ? v + k * (x - (v - v_r)) : v - k * (v - v_r) + x;
}

template <typename R>
GSKD_HD R fire(R h, R v_th) {
  return (h - v_th >= R(0)) ? R(1) : R(0);
}

template <bool HARD, typename R>
GSKD_HD R reset(R h, R s, R v_th, R v_reset) {
  return HARD ? h * (R(1) - s) + v_reset * s : h - v_th * s;
}

// v_r of the charge equation: v_reset for a hard reset, 0 for a soft reset.
template <bool HARD, typename R>
GSKD_HD R charge_rest(R v_reset) {
  return HARD ? v_reset : R(0);
}

// dL/dh[t] from dL/ds[t] (grad_s) and dL/dv[t] (grad_v): the first half of one backward step.
template <int SG, bool HARD, bool DETACH, typename R>
GSKD_HD R grad_h(R h, R grad_s, R grad_v, R v_th, R v_reset, R alpha) {
  const R over = h - v_th;
  const R sg = surrogate_grad<SG>(over, alpha);
  R dv_dh;
  if (HARD) {
    const R s = fire(h, v_th);
    dv_dh = DETACH ? R(1) - s : (R(1) - s) + (v_reset - h) * sg;
  } else {
    dv_dh = DETACH ? R(1) : R(1) - v_th * sg;
  }
  return grad_s * sg + grad_v * dv_dh;
}

// dh[t]/dx[t].
template <bool DECAY_INPUT, typename R>
GSKD_HD R dh_dx(R k) {
  return DECAY_INPUT ? k : R(1);
}

// dh[t]/dk, given x[t] and the membrane before the charge v[t-1].
template <bool DECAY_INPUT, typename R>
GSKD_HD R dh_dk(R x, R v_prev, R v_r) {
  return DECAY_INPUT ? x - (v_prev - v_r) : -(v_prev - v_r);
}

// dh[t]/dv[t-1].
template <typename R>
GSKD_HD R dh_dv_prev(R k) {
  return R(1) - k;
}

// Forward over T steps of neuron i (elements t * N + i). h_seq may be null (inference: nothing saved).
template <bool HARD, bool DECAY_INPUT, typename S, typename R>
GSKD_HD void forward_neuron(const S* x, const S* v_init, S* spikes, R* h_seq, S* v_last, long long T,
                            long long N, long long i, R k, R v_th, R v_reset) {
  const R v_r = charge_rest<HARD>(v_reset);
  R v = Storage<S>::template load<R>(v_init[i]);
  for (long long t = 0; t < T; ++t) {
    const long long j = t * N + i;
    const R h = charge<DECAY_INPUT>(v, Storage<S>::template load<R>(x[j]), k, v_r);
    const R s = fire(h, v_th);
    spikes[j] = Storage<S>::template store<R>(s);
    if (h_seq != nullptr) h_seq[j] = h;
    v = reset<HARD>(h, s, v_th, v_reset);
  }
  v_last[i] = Storage<S>::template store<R>(v);
}

// Backward over T steps of neuron i: writes grad_x[:, i] and grad_v_init[i], returns this neuron's
// contribution to dL/dk (0 unless K_GRAD). x and v_init are read only when K_GRAD is set (x only with
// DECAY_INPUT); they may be null otherwise.
template <int SG, bool HARD, bool DETACH, bool DECAY_INPUT, bool K_GRAD, typename S, typename R>
GSKD_HD R backward_neuron(const S* grad_spikes, const S* grad_v_last, const R* h_seq, const S* x,
                          const S* v_init, S* grad_x, S* grad_v_init, long long T, long long N,
                          long long i, R k, R v_th, R v_reset, R alpha) {
  const R v_r = charge_rest<HARD>(v_reset);
  const R decay_v = dh_dv_prev(k);
  const R decay_x = dh_dx<DECAY_INPUT>(k);
  R gv = Storage<S>::template load<R>(grad_v_last[i]);
  R gk = R(0);
  R h = h_seq[(T - 1) * N + i];
  for (long long t = T - 1; t >= 0; --t) {
    const long long j = t * N + i;
    R h_prev = R(0);
    if (t > 0) h_prev = h_seq[j - N];
    const R gh = grad_h<SG, HARD, DETACH>(h, Storage<S>::template load<R>(grad_spikes[j]), gv, v_th,
                                          v_reset, alpha);
    grad_x[j] = Storage<S>::template store<R>(gh * decay_x);
    if (K_GRAD) {
      R v_prev;
      if (t > 0) {
        v_prev = reset<HARD>(h_prev, fire(h_prev, v_th), v_th, v_reset);
      } else {
        v_prev = Storage<S>::template load<R>(v_init[i]);
      }
      const R x_t = DECAY_INPUT ? Storage<S>::template load<R>(x[j]) : R(0);
      gk += gh * dh_dk<DECAY_INPUT>(x_t, v_prev, v_r);
    }
    gv = gh * decay_v;
    h = h_prev;
  }
  grad_v_init[i] = Storage<S>::template store<R>(gv);
  return gk;
}

}  // namespace gskd
