// Native CPU multi-step neuron (forward + backward), the "cpp" backend of graphspike_kd.spiking.neurons.
//
// Same arithmetic as the torch path (graphspike_kd/spiking/torch_loop.py), per neuron, with the membrane
// tracked relative to the reset value (u = v - v_reset, threshold th = v_threshold - v_reset):
//   decay_input:   h = u + k (x - u)   (written as torch's lerp rounds it)     otherwise: h = x + (1 - k) u
//   s = (h >= th);  soft: u = h - th s;  hard: u = h - h s
// Backward (t = T-1 .. 0, c = dL/du[t]), from a saved h_seq or (h == nullptr) recomputing h per block:
//   soft: gh = c + g' (gs - th c) [or c + g' gs if detach_reset]
//   hard: gh = c (1 - s) + g' (gs - h c) [or c (1 - s) + g' gs]
//   dL/dx[t] = gh (k if decay_input else 1);  c <- gh (1 - k);  dL/dk += gh (x - u[t-1]) or -gh u[t-1]
// Neurons are processed in cache-sized blocks with the time loop inside (so the rows of one block stay in
// L1/L2 and the prefetcher streams each [T, N] tensor once), blocks in parallel with OpenMP.
// Built at first use by graphspike_kd/spiking/native.py (torch.utils.cpp_extension.load, with the flags
// recorded there); plain C ABI called through ctypes, no torch headers.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 1024;
// Neurons per block of the neuron forward and backward (at most kBlock): a [T, 256] row segment per tensor
// keeps a block's per-step working set within L1 and was the fastest of 256 / 1024 / 4096 with cold caches.
constexpr int64_t kNeuronBlock = 256;

// Surrogate ids: the kernel_id of the surrogate classes in graphspike_kd/spiking/surrogate.py (the one table;
// tests/spiking/test_backend_layout.py parses this enum and compares).
enum Surrogate { kSigmoid = 0, kATan = 1, kRectangle = 2, kTriangle = 3, kFastSigmoid = 4, kErf = 5 };

template <typename F>
inline F charge(F u, F x, F k, bool decay_input) {
  if (decay_input) {  // torch.lerp(u, x, k)
    return std::abs(k) < F(0.5) ? u + k * (x - u) : x - (x - u) * (F(1) - k);
  }
  return x + (F(1) - k) * u;
}

// h = x + lam u with lam = 1 - k rounded once from double, as torch.add(x, u, alpha=lam) computes it
template <typename F>
inline F charge_lam(F u, F x, F lam) {
  return x + lam * u;
}

template <typename F, bool SOFT>
inline F reset(F h, F s, F th) {
  return SOFT ? h - th * s : h - h * s;
}

// Returns how many final membranes are not finite (NaN or inf): a NaN or inf anywhere in x, v0 or k stays
// in the membrane to the last step (NaN >= th is false, so neither reset clears it; inf - inf is NaN), so
// counting them on the [N] v_last checks the whole input at no extra pass over [T, N].
template <typename F, bool SOFT>
int64_t forward_impl(const F* x, const F* v0, F* spikes, F* h_seq, F* v_last, int64_t T, int64_t N, F k, F th,
                     F v_r, bool decay_input, int threads) {
  const int64_t blocks = (N + kNeuronBlock - 1) / kNeuronBlock;
  const bool store_h = h_seq != nullptr;  // the recomputing backward needs no h_seq
  int64_t non_finite = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : non_finite)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kNeuronBlock, n = std::min(kNeuronBlock, N - i0);
    F u[kBlock];
    for (int64_t i = 0; i < n; ++i) u[i] = v0[i0 + i] - v_r;
    for (int64_t t = 0; t < T; ++t) {
      const F* xt = x + t * N + i0;
      F* ht = store_h ? h_seq + t * N + i0 : nullptr;
      F* st = spikes + t * N + i0;
      if (decay_input) {
        for (int64_t i = 0; i < n; ++i) {
          F h = charge<F>(u[i], xt[i], k, true);
          F s = h >= th ? F(1) : F(0);
          if (store_h) ht[i] = h;
          st[i] = s;
          u[i] = reset<F, SOFT>(h, s, th);
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          F h = charge<F>(u[i], xt[i], k, false);
          F s = h >= th ? F(1) : F(0);
          if (store_h) ht[i] = h;
          st[i] = s;
          u[i] = reset<F, SOFT>(h, s, th);
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      v_last[i0 + i] = u[i] + v_r;
      non_finite += std::isfinite(u[i]) ? 0 : 1;
    }
  }
  return non_finite;
}

// Neurons per block for the recomputing backward: the [T, block] buffer of h stays within ~256 KiB (L2).
inline int64_t recompute_block_size(int64_t T, size_t elem) {
  const int64_t fit = static_cast<int64_t>((256 * 1024) / (static_cast<size_t>(std::max<int64_t>(T, 1)) * elem));
  return std::max<int64_t>(16, std::min<int64_t>(kNeuronBlock, fit - fit % 16));
}

// forward_impl's recursion for one block of n <= kBlock neurons, writing h into hbuf [T, n] (no spikes):
// the same arithmetic, compiled without contraction, so h is bit-identical to the forward's h_seq.
template <typename F, bool SOFT>
void recompute_membrane(const F* x, const F* v0, F* hbuf, int64_t T, int64_t N, int64_t n, F k, F th, F v_r,
                        bool decay_input) {
  F u[kBlock];
  for (int64_t i = 0; i < n; ++i) u[i] = v0[i] - v_r;
  for (int64_t t = 0; t < T; ++t) {
    const F* xt = x + t * N;
    F* ht = hbuf + t * n;
    if (decay_input) {
      for (int64_t i = 0; i < n; ++i) {
        const F h = charge<F>(u[i], xt[i], k, true);
        const F s = h >= th ? F(1) : F(0);
        ht[i] = h;
        u[i] = reset<F, SOFT>(h, s, th);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const F h = charge<F>(u[i], xt[i], k, false);
        const F s = h >= th ? F(1) : F(0);
        ht[i] = h;
        u[i] = reset<F, SOFT>(h, s, th);
      }
    }
  }
}

// Calls fn(integral_constant<int, SG>, bool_constant<SOFT>) for the run-time surrogate id and reset kind,
// so each kernel is instantiated per (surrogate, reset) and the entry points share one dispatch table.
// Returns 1 for an unknown surrogate id, else 0.
template <typename Fn>
int dispatch_surrogate_reset(int sg, bool soft, Fn&& fn) {
  auto with_reset = [&](auto sg_c) {
    if (soft) fn(sg_c, std::true_type{});
    else fn(sg_c, std::false_type{});
    return 0;
  };
  switch (sg) {
    case kSigmoid: return with_reset(std::integral_constant<int, kSigmoid>{});
    case kATan: return with_reset(std::integral_constant<int, kATan>{});
    case kRectangle: return with_reset(std::integral_constant<int, kRectangle>{});
    case kTriangle: return with_reset(std::integral_constant<int, kTriangle>{});
    case kFastSigmoid: return with_reset(std::integral_constant<int, kFastSigmoid>{});
    case kErf: return with_reset(std::integral_constant<int, kErf>{});
    default: return 1;
  }
}

// The backward may contract a*b+c into FMAs (gradients only; it changes their last bits, never a spike).
// The forward above is compiled without contraction so that its rounding matches the torch path exactly.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

// exp that the compiler can vectorise (libm's expf is a scalar call without -ffast-math): Cody-Waite range
// reduction x = n ln2 + r, a degree-6 polynomial for e^r on |r| <= ln2/2, and 2^n built in the exponent
// bits. Relative error below 2e-7 for float; inputs below -87 flush to 0, above 88 saturate.
inline float exp_vec(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double exp_vec(double x) { return std::exp(x); }

template <typename F, int SG>
inline F surrogate_grad(F x, F alpha) {
  if constexpr (SG == kSigmoid) {
    F g = F(1) / (F(1) + exp_vec(-alpha * x));
    return alpha * g * (F(1) - g);
  } else if constexpr (SG == kATan) {
    F z = F(M_PI / 2) * alpha * x;
    return (alpha / F(2)) / (F(1) + z * z);
  } else if constexpr (SG == kRectangle) {
    return std::abs(x) < F(0.5) / alpha ? alpha : F(0);
  } else if constexpr (SG == kTriangle) {
    return alpha * alpha * std::max(F(0), F(1) / alpha - std::abs(x));
  } else if constexpr (SG == kFastSigmoid) {
    F d = F(1) + alpha * std::abs(x);
    return F(1) / (d * d);
  } else {
    F z = alpha * x;
    return alpha / F(1.7724538509055160273) * exp_vec(-z * z);
  }
}

// p + i, or nullptr for an absent (nullptr) array: grad_v_last (a zero gradient) and grad_v0 (not wanted).
template <typename F>
inline F* offset(F* p, int64_t i) {
  return p == nullptr ? nullptr : p + i;
}

// The reverse-time loop over one block of n neurons. h points at the block's h[0] with row stride
// h_stride (N when reading the saved h_seq, n when reading a block recomputed by recompute_membrane);
// gs, gx and x at the block's row 0 with row stride N. gv_last == nullptr reads as zeros; gv0 == nullptr
// skips writing grad_v0. Writes grad_x and grad_v0 (the block's slice) and returns the block's part of dL/dk.
template <typename F, int SG, bool SOFT>
double backward_block(const F* h, int64_t h_stride, const F* gs, const F* gv_last, const F* x, const F* v0,
                      F* gx, F* gv0, int64_t T, int64_t N, int64_t n, F k, F th, F v_r, F alpha, bool detach,
                      bool decay_input, bool want_k) {
  const F dhdx = decay_input ? k : F(1), dhdv = F(1) - k;
  const F keep_surrogate_reset = detach ? F(0) : F(1);  // gradient through the spike used in the reset
  F c[kBlock];
  F acc[kBlock];
  if (gv_last != nullptr) {
    std::memcpy(c, gv_last, static_cast<size_t>(n) * sizeof(F));
  } else {
    std::fill(c, c + n, F(0));
  }
  if (want_k) std::fill(acc, acc + n, F(0));
  for (int64_t t = T - 1; t >= 0; --t) {
    const F* ht = h + t * h_stride;
    const F* gst = gs + t * N;
    F* gxt = gx + t * N;
    if (!want_k) {
      for (int64_t i = 0; i < n; ++i) {
        const F hi = ht[i];
        const F sg = surrogate_grad<F, SG>(hi - th, alpha);
        F gh;
        if (SOFT) {
          gh = c[i] + sg * (gst[i] - keep_surrogate_reset * th * c[i]);
        } else {
          const F si = hi >= th ? F(1) : F(0);
          gh = (c[i] - c[i] * si) + sg * (gst[i] - keep_surrogate_reset * hi * c[i]);
        }
        gxt[i] = gh * dhdx;
        c[i] = gh * dhdv;
      }
    } else {
      const F* xt = x + t * N;
      const F* hp = t > 0 ? h + (t - 1) * h_stride : nullptr;
      for (int64_t i = 0; i < n; ++i) {
        const F hi = ht[i];
        const F sg = surrogate_grad<F, SG>(hi - th, alpha);
        F gh;
        if (SOFT) {
          gh = c[i] + sg * (gst[i] - keep_surrogate_reset * th * c[i]);
        } else {
          const F si = hi >= th ? F(1) : F(0);
          gh = (c[i] - c[i] * si) + sg * (gst[i] - keep_surrogate_reset * hi * c[i]);
        }
        F u_prev = v0[i] - v_r;
        if (hp) {  // th * sp and hp * sp are exact (sp is 0 or 1): u_prev is the forward's membrane
          const F sp = hp[i] >= th ? F(1) : F(0);
          u_prev = SOFT ? hp[i] - th * sp : hp[i] - hp[i] * sp;
        }
        acc[i] += gh * (decay_input ? xt[i] - u_prev : -u_prev);
        gxt[i] = gh * dhdx;
        c[i] = gh * dhdv;
      }
    }
  }
  if (gv0 != nullptr) std::memcpy(gv0, c, static_cast<size_t>(n) * sizeof(F));
  // dL/dk's partial sum, in neuron order (a serial chain of double adds: only when dL/dk is wanted)
  double local = 0.0;
  if (want_k) {
    for (int64_t i = 0; i < n; ++i) local += acc[i];
  }
  return local;
}

// Backward from the saved h_seq [T, N].
template <typename F, int SG, bool SOFT>
double backward_impl(const F* h_seq, const F* grad_spikes, const F* grad_v_last, const F* x, const F* v0,
                     F* grad_x, F* grad_v0, int64_t T, int64_t N, F k, F th, F v_r, F alpha, bool detach,
                     bool decay_input, bool want_k, int threads) {
  const int64_t blocks = (N + kNeuronBlock - 1) / kNeuronBlock;
  double acc_total = 0.0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : acc_total)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kNeuronBlock, n = std::min(kNeuronBlock, N - i0);
    acc_total += backward_block<F, SG, SOFT>(h_seq + i0, N, grad_spikes + i0, offset(grad_v_last, i0),
                                             want_k ? x + i0 : nullptr, want_k ? v0 + i0 : nullptr, grad_x + i0,
                                             offset(grad_v0, i0), T, N, n, k, th, v_r, alpha, detach, decay_input,
                                             want_k);
  }
  return acc_total;
}

// Backward that recomputes h from x and v0 instead of reading a saved h_seq: per block, the forward
// recursion (recompute_membrane, bit-identical to forward_impl) fills a [T, n] buffer that stays in cache,
// then the reverse loop reads it. The forward then writes only the spikes (no h_seq allocation, one
// [T, N] stream less) and autograd keeps x, which the caller allocated anyway, instead of h_seq.
template <typename F, int SG, bool SOFT>
double backward_recompute_impl(const F* x, const F* v0, const F* grad_spikes, const F* grad_v_last, F* grad_x,
                               F* grad_v0, int64_t T, int64_t N, F k, F th, F v_r, F alpha, bool detach,
                               bool decay_input, bool want_k, int threads) {
  const int64_t block = recompute_block_size(T, sizeof(F));
  const int64_t blocks = (N + block - 1) / block;
  double acc_total = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : acc_total)
  {
    std::vector<F> hbuf(static_cast<size_t>(T * block));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * block, n = std::min(block, N - i0);
      recompute_membrane<F, SOFT>(x + i0, v0 + i0, hbuf.data(), T, N, n, k, th, v_r, decay_input);
      acc_total += backward_block<F, SG, SOFT>(hbuf.data(), n, grad_spikes + i0, offset(grad_v_last, i0),
                                               x + i0, v0 + i0, grad_x + i0, offset(grad_v0, i0), T, N, n, k, th,
                                               v_r, alpha, detach, decay_input, want_k);
    }
  }
  return acc_total;
}

template <typename F>
int backward_any(const F* h, const F* gs, const F* gv, const F* x, const F* v0, F* gx, F* gv0, double* gk,
                 int64_t T, int64_t N, F k, F th, F v_r, F alpha, int sg, bool soft, bool detach, bool di,
                 bool want_k, int threads) {
  return dispatch_surrogate_reset(sg, soft, [&](auto sg_c, auto soft_c) {
    constexpr int SG = decltype(sg_c)::value;
    constexpr bool SOFT = decltype(soft_c)::value;
    *gk = h == nullptr  // recompute h from x and v0
              ? backward_recompute_impl<F, SG, SOFT>(x, v0, gs, gv, gx, gv0, T, N, k, th, v_r, alpha, detach,
                                                     di, want_k, threads)
              : backward_impl<F, SG, SOFT>(h, gs, gv, x, v0, gx, gv0, T, N, k, th, v_r, alpha, detach, di,
                                           want_k, threads);
  });
}

// Rate-BP recording spike pass (RateBPNeuron._spike_forward in graphspike_kd/spiking/ratebp.py, whose torch
// ops this mirrors operation by operation, so spikes and membranes are bit-identical): the neuron's forward
// without a graph, accumulating sum_t S[t] and the eligibility sum_t g'_t kappa_t (and, for a learnable
// decay, sum_t g'_t dH[t]/dk), with the state (u, D, dU/dk) carried across calls (lean spike pass).
//   kappa_t = k_in + lam D_{t-1};  D_t = kappa_t rho_t;  rho_t = 1 - S (+ (-h g') unless detached) for a
//   hard reset, 1 - th g' (or 1 when detached) for a soft reset.
// With a soft, detached reset kappa_t is the same number for every neuron: the caller passes the sequence
// (kappa_seq, computed in double as the torch path does) and d_state is unused.
// Each (block, step) runs two loops: the membrane (h, s, u; record_impl below, compiled without FMA
// contraction like the forward) and then the eligibility terms (this function, with FMAs: they change the
// last bits of e, never a spike). Two functions because GCC does not inline across the fp-contract setting,
// and a call per element would not vectorise; a call per block of kBlock neurons costs nothing.
// One loop per (SCALAR_KAPPA, WANT_K) case, and __restrict pointers: with the cases as run-time branches
// and eight possibly-aliasing pointers GCC did not vectorise this loop (3x slower than the forward).
template <typename F, int SG, bool SOFT, bool SCALAR_KAPPA, bool WANT_K>
void record_eligibility_loop(const F* __restrict h, const F* __restrict s, const F* __restrict x,
                             const F* __restrict u_prev, F* __restrict d, F* __restrict dk, F* __restrict ea,
                             F* __restrict eka, int64_t n, F kappa_t, F lam, F k_in, F th, F alpha, bool detach,
                             bool decay_input) {
  const F keep_reset = detach ? F(0) : F(1);  // gradient through the spike used in the reset
  const F di = decay_input ? F(1) : F(0);
  for (int64_t i = 0; i < n; ++i) {
    const F g = surrogate_grad<F, SG>(h[i] - th, alpha);
    F rho = F(1);
    if (SCALAR_KAPPA) {
      ea[i] += g * kappa_t;
    } else {
      const F kappa = d[i] * lam + k_in;
      ea[i] += g * kappa;
      rho = SOFT ? F(1) - keep_reset * th * g : (F(1) - s[i]) - keep_reset * h[i] * g;
      d[i] = kappa * rho;
    }
    if (WANT_K) {
      const F dh_dk = (di * x[i] - u_prev[i]) + lam * dk[i];
      eka[i] += g * dh_dk;
      dk[i] = SCALAR_KAPPA ? dh_dk : dh_dk * rho;
    }
  }
}

template <typename F, int SG, bool SOFT>
void record_eligibility(const F* h, const F* s, const F* x, const F* u_prev, F* d, F* dk, F* ea, F* eka, int64_t n,
                        F kappa_t, F lam, F k_in, F th, F alpha, bool scalar_kappa, bool detach, bool decay_input) {
#define GSK_REC(SC, WK) \
  record_eligibility_loop<F, SG, SOFT, SC, WK>(h, s, x, u_prev, d, dk, ea, eka, n, kappa_t, lam, k_in, th, alpha, \
                                               detach, decay_input)
  if (scalar_kappa) {
    if (dk != nullptr) GSK_REC(true, true); else GSK_REC(true, false);
  } else {
    if (dk != nullptr) GSK_REC(false, true); else GSK_REC(false, false);
  }
#undef GSK_REC
}

#pragma GCC pop_options

// With ch_scale != nullptr the input current is a BatchNorm applied on the fly, c = x * scale[ch] + shift[ch]
// (x [T, B, C, HW] flattened, ch = (neuron index / HW) % C), computed once per element into a block buffer
// (mul then add, two roundings) and used wherever the input appears: the conv output is read once instead
// of BatchNorm reading it twice and writing c for the neuron to read.
template <typename F, int SG, bool SOFT>
void record_impl(const F* x, int64_t x_tstride, const F* ch_scale, const F* ch_shift, int64_t C, int64_t HW,
                 F* spikes, F* u_state, F* d_state, F* dk_state, F* spike_acc, F* elig_acc, F* eligk_acc,
                 const double* kappa_seq, int64_t T, int64_t N, F k, F lam, F k_in, F th, F alpha, bool detach,
                 bool decay_input, int threads) {
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const bool scalar_kappa = kappa_seq != nullptr;
  const bool want_k = dk_state != nullptr;
  const bool affine = ch_scale != nullptr;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kBlock, n = std::min(kBlock, N - i0);
    F h[kBlock];
    F u_prev[kBlock];
    F scale[kBlock], shift[kBlock], cur[kBlock];
    F* u = u_state + i0;
    if (affine) {  // runs of one channel (one integer division per block, not per neuron: they are slow)
      int64_t ch = (i0 / HW) % C, pos = i0 % HW;
      for (int64_t i = 0; i < n;) {
        const int64_t run = std::min(HW - pos, n - i);
        std::fill(scale + i, scale + i + run, ch_scale[ch]);
        std::fill(shift + i, shift + i + run, ch_shift[ch]);
        i += run;
        pos = 0;
        ch = ch + 1 == C ? 0 : ch + 1;
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const F* xt = x + t * x_tstride + i0;  // x_tstride 0: the same input at every step
      if (affine) {
        for (int64_t i = 0; i < n; ++i) cur[i] = xt[i] * scale[i] + shift[i];
        xt = cur;
      }
      F* st = spikes + t * N + i0;
      F* sa = spike_acc + i0;
      if (want_k) std::memcpy(u_prev, u, sizeof(F) * n);
      if (decay_input) {
        for (int64_t i = 0; i < n; ++i) {
          const F hi = charge<F>(u[i], xt[i], k, true);
          const F si = hi >= th ? F(1) : F(0);
          h[i] = hi;
          st[i] = si;
          sa[i] += si;
          u[i] = reset<F, SOFT>(hi, si, th);
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const F hi = charge_lam<F>(u[i], xt[i], lam);
          const F si = hi >= th ? F(1) : F(0);
          h[i] = hi;
          st[i] = si;
          sa[i] += si;
          u[i] = reset<F, SOFT>(hi, si, th);
        }
      }
      record_eligibility<F, SG, SOFT>(h, st, xt, u_prev, scalar_kappa ? nullptr : d_state + i0,
                                      want_k ? dk_state + i0 : nullptr, elig_acc + i0,
                                      want_k ? eligk_acc + i0 : nullptr, n,
                                      scalar_kappa ? F(kappa_seq[t]) : F(0), lam, k_in, th, alpha, scalar_kappa,
                                      detach, decay_input);
    }
  }
}

template <typename F>
int record_any(const F* x, int64_t x_tstride, const F* ch_scale, const F* ch_shift, int64_t C, int64_t HW, F* s,
               F* u, F* d, F* dk, F* sa, F* ea, F* eka, const double* kappa_seq, int64_t T, int64_t N, F k, F lam,
               F k_in, F th, F alpha, int sg, bool soft, bool detach, bool di, int threads) {
  if (ch_scale != nullptr && (C < 1 || HW < 1 || N % (C * HW) != 0)) return 2;
  return dispatch_surrogate_reset(sg, soft, [&](auto sg_c, auto soft_c) {
    record_impl<F, decltype(sg_c)::value, decltype(soft_c)::value>(x, x_tstride, ch_scale, ch_shift, C, HW, s, u, d,
                                                                   dk, sa, ea, eka, kappa_seq, T, N, k, lam, k_in, th,
                                                                   alpha, detach, di, threads);
  });
}

// Per-channel mean and M2 = sum (x - mean)^2 of x [B, C, HW] (BatchNorm's batch statistics), in double,
// from sums of x - K with K the channel's first element (the shifted-data algorithm: no cancellation when
// |mean| >> std). Eight independent partial sums per plane so the loop vectorises without reordering a
// single sum (GCC does not reassociate a floating-point reduction without -ffast-math).
template <typename F>
void channel_moments_impl(const F* x, int64_t B, int64_t C, int64_t HW, double* mean, double* m2, int threads) {
  const double count = static_cast<double>(B) * static_cast<double>(HW);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t ch = 0; ch < C; ++ch) {
    const double K = static_cast<double>(x[ch * HW]);
    double s1[8] = {0}, s2[8] = {0};
    for (int64_t b = 0; b < B; ++b) {
      const F* p = x + (b * C + ch) * HW;
      int64_t j = 0;
      for (; j + 8 <= HW; j += 8) {
        for (int l = 0; l < 8; ++l) {
          const double d = static_cast<double>(p[j + l]) - K;
          s1[l] += d;
          s2[l] += d * d;
        }
      }
      for (; j < HW; ++j) {
        const double d = static_cast<double>(p[j]) - K;
        s1[j % 8] += d;
        s2[j % 8] += d * d;
      }
    }
    double t1 = 0.0, t2 = 0.0;
    for (int l = 0; l < 8; ++l) {
      t1 += s1[l];
      t2 += s2[l];
    }
    mean[ch] = K + t1 / count;
    m2[ch] = std::max(0.0, t2 - t1 * t1 / count);
  }
}

}  // namespace

extern "C" {

// The forward entry points return the number of non-finite final membranes (0 when x, v0 and k are finite).
int64_t gsk_neuron_forward_f32(const float* x, const float* v0, float* s, float* h, float* v_last, int64_t T,
                               int64_t N, double k, double th, double v_r, int decay_input, int soft, int threads) {
  return soft ? forward_impl<float, true>(x, v0, s, h, v_last, T, N, float(k), float(th), float(v_r), decay_input,
                                          threads)
              : forward_impl<float, false>(x, v0, s, h, v_last, T, N, float(k), float(th), float(v_r), decay_input,
                                           threads);
}

int64_t gsk_neuron_forward_f64(const double* x, const double* v0, double* s, double* h, double* v_last, int64_t T,
                               int64_t N, double k, double th, double v_r, int decay_input, int soft, int threads) {
  return soft ? forward_impl<double, true>(x, v0, s, h, v_last, T, N, k, th, v_r, decay_input, threads)
              : forward_impl<double, false>(x, v0, s, h, v_last, T, N, k, th, v_r, decay_input, threads);
}

int gsk_neuron_backward_f32(const float* h, const float* gs, const float* gv, const float* x, const float* v0,
                            float* gx, float* gv0, double* gk, int64_t T, int64_t N, double k, double th,
                            double v_r, double alpha, int surrogate, int soft, int detach, int decay_input,
                            int want_k, int threads) {
  return backward_any<float>(h, gs, gv, x, v0, gx, gv0, gk, T, N, float(k), float(th), float(v_r), float(alpha),
                             surrogate, soft, detach, decay_input, want_k, threads);
}

int gsk_neuron_backward_f64(const double* h, const double* gs, const double* gv, const double* x,
                            const double* v0, double* gx, double* gv0, double* gk, int64_t T, int64_t N, double k,
                            double th, double v_r, double alpha, int surrogate, int soft, int detach,
                            int decay_input, int want_k, int threads) {
  return backward_any<double>(h, gs, gv, x, v0, gx, gv0, gk, T, N, k, th, v_r, alpha, surrogate, soft, detach,
                              decay_input, want_k, threads);
}

// x_tstride: elements between the rows x[t] and x[t + 1]; N for a [T, N] tensor, 0 for one [N] row used at
// every step (a static input repeated over time, read without materialising the copies). ch_scale/ch_shift
// [C] (or null): the per-channel affine map of record_impl. Returns 0, 1 (unknown surrogate) or 2 (N is not
// a multiple of C * HW).
int gsk_ratebp_record_f32(const float* x, int64_t x_tstride, const float* ch_scale, const float* ch_shift, int64_t C,
                          int64_t HW, float* s, float* u, float* d, float* dk, float* sa, float* ea, float* eka,
                          const double* kappa_seq, int64_t T, int64_t N, double k, double lam, double k_in, double th,
                          double alpha, int surrogate, int soft, int detach, int decay_input, int threads) {
  return record_any<float>(x, x_tstride, ch_scale, ch_shift, C, HW, s, u, d, dk, sa, ea, eka, kappa_seq, T, N,
                           float(k), float(lam), float(k_in), float(th), float(alpha), surrogate, soft, detach,
                           decay_input, threads);
}

int gsk_ratebp_record_f64(const double* x, int64_t x_tstride, const double* ch_scale, const double* ch_shift,
                          int64_t C, int64_t HW, double* s, double* u, double* d, double* dk, double* sa, double* ea,
                          double* eka, const double* kappa_seq, int64_t T, int64_t N, double k, double lam,
                          double k_in, double th, double alpha, int surrogate, int soft, int detach, int decay_input,
                          int threads) {
  return record_any<double>(x, x_tstride, ch_scale, ch_shift, C, HW, s, u, d, dk, sa, ea, eka, kappa_seq, T, N, k,
                            lam, k_in, th, alpha, surrogate, soft, detach, decay_input, threads);
}

int gsk_channel_moments_f32(const float* x, int64_t B, int64_t C, int64_t HW, double* mean, double* m2,
                            int threads) {
  channel_moments_impl<float>(x, B, C, HW, mean, m2, threads);
  return 0;
}

int gsk_channel_moments_f64(const double* x, int64_t B, int64_t C, int64_t HW, double* mean, double* m2,
                            int threads) {
  channel_moments_impl<double>(x, B, C, HW, mean, m2, threads);
  return 0;
}

}  // extern "C"
