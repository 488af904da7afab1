// The native CPU neuron as PyTorch operators: the "cpu" overloads of the package's one op family,
// graphspike_kd::neuron_forward.cpu / neuron_backward.cpu (the default overloads, defined in Python by
// graphspike_kd/spiking/functional.py, take the implementation as an argument), with CPU kernels, Meta
// kernels (shapes for torch.compile's fake tensors) and a C++ autograd kernel, so a call, eager or
// compiled, goes from the dispatcher to the loops of neuron_cpu.cpp without Python.
//
//   neuron_forward.cpu(x_seq [T, ...], v_init [...], decay (0-dim), v_threshold, v_reset?, decay_input,
//                      detach_reset, surrogate, alpha) -> (spikes [T, ...], v_last [...])
//   neuron_backward.cpu(grad_spikes?, grad_v_last?, x_seq, v_init, decay, ..., want_k, want_v=True)
//                      -> (grad_x [T, ...], grad_v_init [...] ([0] unless want_v), grad_decay (0-dim; 0 unless
//                          want_k))
//
// The autograd kernel saves x_seq, v_init and decay (the backward recomputes the membranes block by block,
// bit-identical to the forward's, instead of keeping h_seq) and calls neuron_backward.cpu through the
// dispatcher, so torch.compile's AOTAutograd traces both as single graph nodes. Built with neuron_cpu.cpp
// into one library by graphspike_kd/spiking/native.py (torch.utils.cpp_extension.load).

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define GSK_HAVE_PTHREAD_ATFORK 1
#endif
#include <mutex>
#include <new>
#include <optional>
#include <utility>
#include <vector>
#include <string>
#include <tuple>

extern "C" {
int64_t gsk_neuron_forward_f32(const float* x, const float* v0, float* s, float* h, float* v_last, int64_t T,
                               int64_t N, double k, double th, double v_r, int decay_input, int soft, int threads);
int64_t gsk_neuron_forward_f64(const double* x, const double* v0, double* s, double* h, double* v_last, int64_t T,
                               int64_t N, double k, double th, double v_r, int decay_input, int soft, int threads);
int gsk_neuron_backward_f32(const float* h, const float* gs, const float* gv, const float* x, const float* v0,
                            float* gx, float* gv0, double* gk, int64_t T, int64_t N, double k, double th,
                            double v_r, double alpha, int surrogate, int soft, int detach, int decay_input,
                            int want_k, int threads);
int gsk_neuron_backward_f64(const double* h, const double* gs, const double* gv, const double* x,
                            const double* v0, double* gx, double* gv0, double* gk, int64_t T, int64_t N, double k,
                            double th, double v_r, double alpha, int surrogate, int soft, int detach,
                            int decay_input, int want_k, int threads);
}

namespace {

using at::Tensor;

// The allocator of the operators' outputs (spikes, v_last, grad_x, grad_v_init): buffers of at least
// kPoolMinBytes come from a small cache of freed buffers of the same size before the system allocator.
// A training loop allocates and frees the same [T, N] outputs at every iteration; glibc serves requests
// this large with a fresh mmap each time (and unmaps them on free), so every call would page-fault and zero
// every page of its outputs again, which costs about as much as the kernels' own memory traffic. Freed buffers are kept only up to kPoolMaxBlocks and kPoolMaxBytes in all (the rest go
// back to the system); contents are never read before the kernels overwrite them.
class OutputPool final : public c10::Allocator {
 public:
  static constexpr size_t kPoolMinBytes = 256 * 1024;
  static constexpr size_t kPoolMaxBlocks = 8;
  static constexpr size_t kPoolMaxBytes = size_t(512) << 20;
  static constexpr size_t kAlignment = 64;

  c10::DataPtr allocate(size_t n) override {
    if (n < kPoolMinBytes) return c10::GetCPUAllocator()->allocate(n);
    void* ptr = take(n);
    if (ptr == nullptr) {
      ptr = std::aligned_alloc(kAlignment, (n + kAlignment - 1) / kAlignment * kAlignment);
      TORCH_CHECK(ptr != nullptr, "graphspike_kd native neuron: out of memory allocating ", n, " bytes");
    }
    return {ptr, new Block{ptr, n}, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static OutputPool& get() {
    static OutputPool* pool = [] {
      auto* created = new OutputPool();  // never destroyed: tensors may outlive static destructors
#ifdef GSK_HAVE_PTHREAD_ATFORK
      // A child forked while another thread held the lock would deadlock on it: give the child a new one.
      pthread_atfork(nullptr, nullptr, [] { new (&get().mutex_) std::mutex(); });
#endif
      return created;
    }();
    return *pool;
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };

  void* take(size_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < free_.size(); ++i) {
      if (free_[i].bytes == n) {
        void* ptr = free_[i].ptr;
        cached_ -= n;
        free_[i] = free_.back();
        free_.pop_back();
        return ptr;
      }
    }
    return nullptr;
  }

  static void release(void* ctx) {
    Block* block = static_cast<Block*>(ctx);
    OutputPool& pool = get();
    bool kept = false;
    {
      std::lock_guard<std::mutex> lock(pool.mutex_);
      if (pool.free_.size() < kPoolMaxBlocks && pool.cached_ + block->bytes <= kPoolMaxBytes) {
        pool.free_.push_back(*block);
        pool.cached_ += block->bytes;
        kept = true;
      }
    }
    if (!kept) std::free(block->ptr);
    delete block;
  }

  std::mutex mutex_;
  std::vector<Block> free_;
  size_t cached_ = 0;
};

// An uninitialised contiguous CPU tensor from OutputPool.
Tensor pooled_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::detail::empty_generic(sizes, &OutputPool::get(), c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   std::nullopt);
}
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_operands(const Tensor& x, const Tensor& v0, const Tensor& decay, const char* op) {
  TORCH_CHECK(x.device().is_cpu() && v0.device().is_cpu() && decay.device().is_cpu(), "graphspike_kd::", op,
              ": every tensor must be on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "graphspike_kd::", op,
              ": x_seq must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(0) >= 1, "graphspike_kd::", op, ": x_seq must be [T, ...] with T >= 1, got ",
                    x.sizes());
  TORCH_CHECK_VALUE(v0.numel() * x.size(0) == x.numel(), "graphspike_kd::", op, ": v_init has shape ", v0.sizes(),
                    " but x_seq ", x.sizes(), " needs one value per neuron of a step");
  TORCH_CHECK_VALUE(decay.numel() == 1, "graphspike_kd::", op, ": decay must hold one value, got shape ",
                    decay.sizes());
}

// The text of the ValueError for non-finite final membranes (the same as the torch path's).
std::string non_finite_message(int64_t count, int64_t n, double k) {
  std::string cause = std::isfinite(k) ? std::string("the input x_seq or the initial membrane v_init")
                                       : "the decay factor k = " + std::string(std::isnan(k) ? "nan" : "inf") +
                                             " (PLIF: sigmoid(w))";
  return "neuron: " + std::to_string(count) + " of " + std::to_string(n) +
         " membranes are NaN or inf after the last step: " + cause +
         " contains NaN or inf (or the input overflowed); spikes from it would be silently all zero";
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& x_seq, const Tensor& v_init, const Tensor& decay,
                                       double v_threshold, std::optional<double> v_reset, bool decay_input,
                                       bool detach_reset, int64_t surrogate, double alpha) {
  (void)detach_reset, (void)surrogate, (void)alpha;  // backward-only options
  check_operands(x_seq, v_init, decay, "neuron_forward.cpu");
  const Tensor x = x_seq.contiguous();
  const Tensor u0 = v_init.to(x.scalar_type()).contiguous();
  const int64_t T = x.size(0), N = x.numel() / T;
  const double k = decay.item<double>(), v_r = v_reset.value_or(0.0), th = v_threshold - v_r;
  const int soft = v_reset.has_value() ? 0 : 1;
  Tensor spikes = pooled_empty(x.sizes(), x.scalar_type());
  Tensor v_last = pooled_empty(v_init.sizes(), x.scalar_type());
  const int threads = at::get_num_threads();
  int64_t non_finite;
  if (x.scalar_type() == at::kFloat) {
    non_finite = gsk_neuron_forward_f32(x.data_ptr<float>(), u0.data_ptr<float>(), spikes.data_ptr<float>(), nullptr,
                                        v_last.data_ptr<float>(), T, N, k, th, v_r, decay_input, soft, threads);
  } else {
    non_finite = gsk_neuron_forward_f64(x.data_ptr<double>(), u0.data_ptr<double>(), spikes.data_ptr<double>(),
                                        nullptr, v_last.data_ptr<double>(), T, N, k, th, v_r, decay_input, soft,
                                        threads);
  }
  TORCH_CHECK_VALUE(non_finite == 0, non_finite_message(non_finite, N, k));
  return {spikes, v_last};
}

// A pointer to t's data, or nullptr for an undefined t (what the kernels read as "absent").
template <typename F>
F* data_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<F>() : nullptr;
}

// grad_spikes / grad_v_last may be None (a zero gradient: the autograd kernel does not materialise the
// gradients of unused outputs): a missing grad_v_last costs nothing, a missing grad_spikes reads zeros.
// want_v=False returns an empty [0] tensor in place of grad_v_init (v_init needs no gradient) and skips
// its allocation and writes; want_k=False returns a zero grad_decay.
std::tuple<Tensor, Tensor, Tensor> backward_cpu(const std::optional<Tensor>& grad_spikes,
                                                const std::optional<Tensor>& grad_v_last, const Tensor& x_seq,
                                                const Tensor& v_init, const Tensor& decay, double v_threshold,
                                                std::optional<double> v_reset, bool decay_input, bool detach_reset,
                                                int64_t surrogate, double alpha, bool want_k, bool want_v) {
  check_operands(x_seq, v_init, decay, "neuron_backward.cpu");
  const bool has_gs = grad_spikes.has_value() && grad_spikes->defined();
  const bool has_gv = grad_v_last.has_value() && grad_v_last->defined();
  TORCH_CHECK_VALUE((!has_gs || grad_spikes->numel() == x_seq.numel()) &&
                        (!has_gv || grad_v_last->numel() == v_init.numel()),
                    "graphspike_kd::neuron_backward.cpu: gradient shapes ",
                    has_gs ? grad_spikes->sizes() : at::IntArrayRef{}, " and ",
                    has_gv ? grad_v_last->sizes() : at::IntArrayRef{}, " do not match x_seq ", x_seq.sizes(),
                    " and v_init ", v_init.sizes());
  const Tensor x = x_seq.contiguous();
  const auto dtype = x.scalar_type();
  const Tensor u0 = v_init.to(dtype).contiguous();
  const Tensor gs = has_gs ? grad_spikes->to(dtype).contiguous() : at::zeros_like(x, at::MemoryFormat::Contiguous);
  const Tensor gv = has_gv ? grad_v_last->to(dtype).contiguous() : Tensor();
  const int64_t T = x.size(0), N = x.numel() / T;
  const double k = decay.item<double>(), v_r = v_reset.value_or(0.0), th = v_threshold - v_r;
  const int soft = v_reset.has_value() ? 0 : 1;
  Tensor grad_x = pooled_empty(x.sizes(), dtype);
  Tensor grad_v = want_v ? pooled_empty(v_init.sizes(), dtype) : at::empty({0}, x.options());
  const Tensor gv_out = want_v ? grad_v : Tensor();
  double grad_k = 0.0;
  const int threads = at::get_num_threads();
  int status;
  if (dtype == at::kFloat) {
    status = gsk_neuron_backward_f32(nullptr, gs.data_ptr<float>(), data_or_null<float>(gv), x.data_ptr<float>(),
                                     u0.data_ptr<float>(), grad_x.data_ptr<float>(), data_or_null<float>(gv_out),
                                     &grad_k, T, N, k, th, v_r, alpha, static_cast<int>(surrogate), soft,
                                     detach_reset, decay_input, want_k, threads);
  } else {
    status = gsk_neuron_backward_f64(nullptr, gs.data_ptr<double>(), data_or_null<double>(gv), x.data_ptr<double>(),
                                     u0.data_ptr<double>(), grad_x.data_ptr<double>(), data_or_null<double>(gv_out),
                                     &grad_k, T, N, k, th, v_r, alpha, static_cast<int>(surrogate), soft,
                                     detach_reset, decay_input, want_k, threads);
  }
  TORCH_CHECK(status == 0, "graphspike_kd::neuron_backward.cpu: unknown surrogate id ", surrogate);
  Tensor gk = want_k ? at::scalar_tensor(grad_k, x.options()).to(decay.scalar_type())
                     : at::zeros({}, decay.options());
  return {grad_x, grad_v, gk};
}

// Shapes only (fake tensors under torch.compile): the CPU kernels return contiguous tensors of x's dtype.
std::tuple<Tensor, Tensor> forward_meta(const Tensor& x_seq, const Tensor& v_init, const Tensor& decay, double,
                                        std::optional<double>, bool, bool, int64_t, double) {
  (void)decay;
  return {at::empty_like(x_seq, at::MemoryFormat::Contiguous),
          at::empty_like(v_init, v_init.options().dtype(x_seq.scalar_type()), at::MemoryFormat::Contiguous)};
}

std::tuple<Tensor, Tensor, Tensor> backward_meta(const std::optional<Tensor>&, const std::optional<Tensor>&,
                                                 const Tensor& x_seq, const Tensor& v_init, const Tensor& decay,
                                                 double, std::optional<double>, bool, bool, int64_t, double, bool,
                                                 bool want_v) {
  return {at::empty_like(x_seq, at::MemoryFormat::Contiguous),
          want_v ? at::empty_like(v_init, v_init.options().dtype(x_seq.scalar_type()), at::MemoryFormat::Contiguous)
                 : at::empty({0}, v_init.options().dtype(x_seq.scalar_type())),
          at::empty_like(decay)};
}

const c10::TypedOperatorHandle<decltype(forward_cpu)>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("graphspike_kd::neuron_forward", "cpu")
                             .typed<decltype(forward_cpu)>();
  return op;
}

const c10::TypedOperatorHandle<decltype(backward_cpu)>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("graphspike_kd::neuron_backward", "cpu")
                             .typed<decltype(backward_cpu)>();
  return op;
}

class NeuronFunction : public torch::autograd::Function<NeuronFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x_seq, const Tensor& v_init, const Tensor& decay,
                               double v_threshold, std::optional<double> v_reset, bool decay_input, bool detach_reset,
                               int64_t surrogate, double alpha) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: no zeros to fill
    auto [spikes, v_last] =
        forward_op().call(x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha);
    ctx->save_for_backward({x_seq, v_init, decay});
    ctx->saved_data["v_threshold"] = v_threshold;
    ctx->saved_data["v_reset"] = v_reset;
    ctx->saved_data["decay_input"] = decay_input;
    ctx->saved_data["detach_reset"] = detach_reset;
    ctx->saved_data["surrogate"] = surrogate;
    ctx->saved_data["alpha"] = alpha;
    return {spikes, v_last};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool want_k = ctx->needs_input_grad(2), want_v = ctx->needs_input_grad(1);
    if (!grads[0].defined() && !grads[1].defined()) {  // neither output was used: all gradients are zero
      return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
    const auto& d = ctx->saved_data;
    const std::optional<double> v_reset =
        d.at("v_reset").isNone() ? std::nullopt : std::optional<double>(d.at("v_reset").toDouble());
    auto optional_grad = [](const Tensor& g) { return g.defined() ? std::optional<Tensor>(g) : std::nullopt; };
    auto [grad_x, grad_v, grad_k] = backward_op().call(
        optional_grad(grads[0]), optional_grad(grads[1]), saved[0], saved[1], saved[2],
        d.at("v_threshold").toDouble(), v_reset, d.at("decay_input").toBool(), d.at("detach_reset").toBool(),
        d.at("surrogate").toInt(), d.at("alpha").toDouble(), want_k, want_v);
    return {ctx->needs_input_grad(0) ? grad_x : Tensor(), want_v ? grad_v : Tensor(), want_k ? grad_k : Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> forward_autograd(const Tensor& x_seq, const Tensor& v_init, const Tensor& decay,
                                            double v_threshold, std::optional<double> v_reset, bool decay_input,
                                            bool detach_reset, int64_t surrogate, double alpha) {
  auto out = NeuronFunction::apply(x_seq, v_init, decay, v_threshold, v_reset, decay_input, detach_reset, surrogate,
                                   alpha);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(graphspike_kd, m) {
  m.def(
      "neuron_forward.cpu(Tensor x_seq, Tensor v_init, Tensor decay, float v_threshold, float? v_reset, "
      "bool decay_input, bool detach_reset, int surrogate, float alpha) -> (Tensor, Tensor)");
  m.def(
      "neuron_backward.cpu(Tensor? grad_spikes, Tensor? grad_v_last, Tensor x_seq, Tensor v_init, Tensor decay, "
      "float v_threshold, float? v_reset, bool decay_input, bool detach_reset, int surrogate, float alpha, "
      "bool want_k, bool want_v=True) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(graphspike_kd, CPU, m) {
  m.impl("neuron_forward.cpu", TORCH_FN(forward_cpu));
  m.impl("neuron_backward.cpu", TORCH_FN(backward_cpu));
}

TORCH_LIBRARY_IMPL(graphspike_kd, Meta, m) {
  m.impl("neuron_forward.cpu", TORCH_FN(forward_meta));
  m.impl("neuron_backward.cpu", TORCH_FN(backward_meta));
}

// The backward is differentiable once (as torch.autograd.function.once_differentiable): a second
// derivative through it raises "derivative for graphspike_kd::neuron_backward.cpu is not implemented".
TORCH_LIBRARY_IMPL(graphspike_kd, Autograd, m) {
  m.impl("neuron_forward.cpu", TORCH_FN(forward_autograd));
  m.impl("neuron_backward.cpu", torch::autograd::autogradNotImplementedFallback());
}
