// Schemas of every vocabxfer op. Device kernels register themselves in
// csrc/cpu and csrc/cuda; this file only declares what exists.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An empty module: importing vocabxfer._C only runs the static registrations
// below, so no pybind11 is needed and the module stays ABI-stable.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(vocabxfer, m) {
  // target[target_index[i]] = source[source_index[i]] for every i, converting
  // dtype on the way.
  m.def(
      "transfer_rows_(Tensor(a!) target, Tensor target_index, Tensor source, "
      "Tensor source_index) -> ()");
  // target[target_index[s]] = (weighted) mean of
  //   source[source_index[offsets[s] : offsets[s + 1]]] for every segment s.
  m.def(
      "segment_mean_(Tensor(a!) target, Tensor target_index, Tensor source, "
      "Tensor source_index, Tensor offsets, Tensor? weights) -> ()");
}
