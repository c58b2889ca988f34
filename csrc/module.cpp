// The Python module vocabxfer._C. It is empty on purpose: importing it runs
// the static TORCH_LIBRARY_IMPL registrations of the kernels in csrc/cpu and
// csrc/cuda. The op schemas are defined once, in vocabxfer/_extension.py, so
// the compiled kernels and the pure-torch fallback share them. No pybind11 is
// needed and the module stays ABI-stable (abi3).
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
