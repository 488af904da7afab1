// Host build of the per-neuron kernel arithmetic (neuron_math.cuh), for tests: the same forward and
// backward recursions the CUDA kernels run, over plain arrays on the CPU, behind a C ABI for ctypes.
//
//   g++ -std=c++17 -O2 -ffp-contract=off -shared -fPIC host_harness.cpp -o libgskd_host.so
//
// -ffp-contract=off matches the kernels' --fmad=false: every operation is rounded on its own, as in a
// torch step loop. Layout: x, spikes, h_seq, grad_* are [T, N] row-major; v_init, v_last are [N].
#include <type_traits>

#include "neuron_math.cuh"

namespace {

template <class F>
auto dispatch_bool(bool flag, F&& f) {
  return flag ? f(std::true_type{}) : f(std::false_type{});
}

template <typename R>
int forward_all(const R* x, const R* v_init, R* spikes, R* h_seq, R* v_last, long long T, long long N, R k,
                R v_th, R v_reset, int hard, int decay_input) {
  if (T < 1 || N < 0) return 1;
  dispatch_bool(hard != 0, [&](auto hard_c) {
    return dispatch_bool(decay_input != 0, [&](auto di_c) {
      for (long long i = 0; i < N; ++i) {
        gskd::forward_neuron<decltype(hard_c)::value, decltype(di_c)::value, R, R>(x, v_init, spikes, h_seq,
                                                                                  v_last, T, N, i, k, v_th,
                                                                                  v_reset);
      }
      return 0;
    });
  });
  return 0;
}

template <int SG, typename R>
R backward_sg(const R* grad_spikes, const R* grad_v_last, const R* h_seq, const R* x, const R* v_init,
              R* grad_x, R* grad_v_init, long long T, long long N, R k, R v_th, R v_reset, R alpha, int hard,
              int detach, int decay_input, int k_grad) {
  return dispatch_bool(hard != 0, [&](auto hard_c) {
    return dispatch_bool(detach != 0, [&](auto detach_c) {
      return dispatch_bool(decay_input != 0, [&](auto di_c) {
        return dispatch_bool(k_grad != 0, [&](auto kg_c) {
          R total = R(0);
          for (long long i = 0; i < N; ++i) {
            total += gskd::backward_neuron<SG, decltype(hard_c)::value, decltype(detach_c)::value,
                                           decltype(di_c)::value, decltype(kg_c)::value, R, R>(
                grad_spikes, grad_v_last, h_seq, x, v_init, grad_x, grad_v_init, T, N, i, k, v_th, v_reset,
                alpha);
          }
          return total;
        });
      });
    });
  });
}

template <typename R>
int backward_all(const R* grad_spikes, const R* grad_v_last, const R* h_seq, const R* x, const R* v_init,
                 R* grad_x, R* grad_v_init, R* grad_k, long long T, long long N, R k, R v_th, R v_reset,
                 R alpha, int surrogate, int hard, int detach, int decay_input, int k_grad) {
  if (T < 1 || N < 0) return 1;
#define GSKD_CASE(ID)                                                                                    \
  case ID:                                                                                               \
    *grad_k = backward_sg<ID, R>(grad_spikes, grad_v_last, h_seq, x, v_init, grad_x, grad_v_init, T, N, k, \
                                 v_th, v_reset, alpha, hard, detach, decay_input, k_grad);               \
    return 0;
  switch (surrogate) {
    GSKD_CASE(gskd::kSigmoid)
    GSKD_CASE(gskd::kATan)
    GSKD_CASE(gskd::kRectangle)
    GSKD_CASE(gskd::kTriangle)
    GSKD_CASE(gskd::kFastSigmoid)
    default:
      return 2;
  }
#undef GSKD_CASE
}

}  // namespace

// Return codes: 0 ok, 1 bad sizes, 2 unknown surrogate id.
extern "C" {

int gskd_host_forward_f32(const float* x, const float* v_init, float* spikes, float* h_seq, float* v_last,
                          long long T, long long N, float k, float v_th, float v_reset, int hard,
                          int decay_input) {
  return forward_all<float>(x, v_init, spikes, h_seq, v_last, T, N, k, v_th, v_reset, hard, decay_input);
}

int gskd_host_forward_f64(const double* x, const double* v_init, double* spikes, double* h_seq,
                          double* v_last, long long T, long long N, double k, double v_th, double v_reset,
                          int hard, int decay_input) {
  return forward_all<double>(x, v_init, spikes, h_seq, v_last, T, N, k, v_th, v_reset, hard, decay_input);
}

int gskd_host_backward_f32(const float* grad_spikes, const float* grad_v_last, const float* h_seq,
                           const float* x, const float* v_init, float* grad_x, float* grad_v_init,
                           float* grad_k, long long T, long long N, float k, float v_th, float v_reset,
                           float alpha, int surrogate, int hard, int detach, int decay_input, int k_grad) {
  return backward_all<float>(grad_spikes, grad_v_last, h_seq, x, v_init, grad_x, grad_v_init, grad_k, T, N, k,
                             v_th, v_reset, alpha, surrogate, hard, detach, decay_input, k_grad);
}

int gskd_host_backward_f64(const double* grad_spikes, const double* grad_v_last, const double* h_seq,
                           const double* x, const double* v_init, double* grad_x, double* grad_v_init,
                           double* grad_k, long long T, long long N, double k, double v_th, double v_reset,
                           double alpha, int surrogate, int hard, int detach, int decay_input, int k_grad) {
  return backward_all<double>(grad_spikes, grad_v_last, h_seq, x, v_init, grad_x, grad_v_init, grad_k, T, N,
                              k, v_th, v_reset, alpha, surrogate, hard, detach, decay_input, k_grad);
}

}  // extern "C"
