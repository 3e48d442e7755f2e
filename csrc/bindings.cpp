// Python bindings of sdarts._C: the mixed-sum kernels (contract: sdarts/ops/reference.py).
#include <torch/extension.h>

#include "mixed_sum.h"

namespace {

bool with_cuda() {
#ifdef SDARTS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sdarts fused mixed-sum kernels (CPU, and CUDA when built with it)";
  namespace py = pybind11;
  const char* fwd_doc =
      "out = sum_k coef[k] * (scale[k,c] * branches[k] + shift[k,c]) + w_skip * x + w_pool * avg_pool3(x)";
  const char* bwd_doc =
      "-> (grad_branches list, grad_x (empty if not needed), chan_dot (B,C) f32, chan_gsum (C,) f32, "
      "dot_skip f32 0-dim, dot_pool f32 0-dim)";
  m.def("mixed_forward_cpu", &sdarts::mixed_forward_cpu, fwd_doc, py::arg("branches"), py::arg("coef"),
        py::arg("scale"), py::arg("shift"), py::arg("x"), py::arg("has_skip"), py::arg("has_pool"));
  m.def("mixed_backward_cpu", &sdarts::mixed_backward_cpu, bwd_doc, py::arg("grad_out"), py::arg("branches"),
        py::arg("coef"), py::arg("scale"), py::arg("x"), py::arg("has_skip"), py::arg("has_pool"),
        py::arg("need_branch_grads"), py::arg("need_x_grad"));
#ifdef SDARTS_WITH_CUDA
  m.def("mixed_forward_cuda", &sdarts::mixed_forward_cuda, fwd_doc, py::arg("branches"), py::arg("coef"),
        py::arg("scale"), py::arg("shift"), py::arg("x"), py::arg("has_skip"), py::arg("has_pool"));
  m.def("mixed_backward_cuda", &sdarts::mixed_backward_cuda, bwd_doc, py::arg("grad_out"), py::arg("branches"),
        py::arg("coef"), py::arg("scale"), py::arg("x"), py::arg("has_skip"), py::arg("has_pool"),
        py::arg("need_branch_grads"), py::arg("need_x_grad"));
#endif
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled in");
  m.def("simd_available", &sdarts::cpu_simd_available,
        "True when the CPU kernels' AVX2+FMA+F16C build exists and this CPU can run it");
  m.def("set_simd", &sdarts::set_cpu_simd,
        "Allow (True, the default) or forbid (False) the CPU kernels' AVX2 build; returns the previous "
        "setting.  SDARTS_NO_SIMD=1 at load time starts with it forbidden.",
        py::arg("enabled"));
  m.def("cpu_isa", &sdarts::cpu_isa, "Which build of the CPU kernels runs now: 'avx2' or 'base'");
}
