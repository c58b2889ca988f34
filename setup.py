"""Builds vocabxfer._C: a CUDA extension when the installed torch is a CUDA
build and a CUDA toolkit is found (or FORCE_CUDA=1), CPU-only otherwise
(or FORCE_ONLY_CPU=1). Whether a GPU is visible never matters, so a wheel for
a GPU server builds on a machine without one.

Environment:
  FORCE_CUDA=1            build the CUDA kernels or fail trying
  FORCE_ONLY_CPU=1        build the CPU kernels only
  TORCH_CUDA_ARCH_LIST    GPU architectures, e.g. "8.0;9.0+PTX"
                          (default: Volta or Turing to Hopper, plus PTX)
  MAX_JOBS                parallel compile jobs (read by torch's BuildExtension)
  CUDA_HOME               the CUDA toolkit (default: /usr/local/cuda if present)
  VOCABXFER_DEBUG=1       keep debug symbols and drop optimisation
"""

import glob
import os

# torch's cpp_extension decides CUDA_HOME when it is imported, from `which
# nvcc`; a wrapper script on PATH makes that guess wrong, so prefer the
# standard toolkit location before importing it.
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def build_with_cuda() -> bool:
    if env_flag("FORCE_ONLY_CPU"):
        return False
    torch_has_cuda = torch.version.cuda is not None
    toolkit_found = cpp_extension.CUDA_HOME is not None
    if env_flag("FORCE_CUDA"):
        if not torch_has_cuda:
            raise RuntimeError(
                f"FORCE_CUDA=1 but the installed torch {torch.__version__} is a "
                "CPU-only build; install a CUDA build of torch first")
        if not toolkit_found:
            raise RuntimeError(
                "FORCE_CUDA=1 but no CUDA toolkit was found; set CUDA_HOME to it")
        return True
    return torch_has_cuda and toolkit_found


def default_cuda_arch_list() -> str:
    # CUDA 13 dropped Volta (sm_70); older toolkits still build it.
    cuda_major = int(torch.version.cuda.split(".")[0])
    first = "7.5" if cuda_major >= 13 else "7.0"
    return f"{first};8.0;8.6;8.9;9.0+PTX"


def extension():
    debug = env_flag("VOCABXFER_DEBUG")
    # Python's own CFLAGS carry -g; -g0 drops the symbols that would double
    # the build time. nvcc adds none unless asked.
    cxx_args = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # at::parallel_for is inlined into our code: without -fopenmp its
    # OpenMP pragmas are ignored and every "parallel" loop runs on one thread.
    cxx_args.append("-fopenmp")
    nvcc_args = ["-O0", "-g", "-lineinfo"] if debug else ["-O3"]
    sources = [os.path.relpath(p, ROOT) for p in
               sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))
               + sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))]
    # py_limited_api: torch defines Py_LIMITED_API for us, and one abi3 wheel
    # serves every CPython >= 3.9 for the torch it was built against.
    if not build_with_cuda():
        return cpp_extension.CppExtension(
            "vocabxfer._C", sources, py_limited_api=True,
            extra_compile_args={"cxx": cxx_args}, extra_link_args=["-fopenmp"])
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_cuda_arch_list())
    sources += [os.path.relpath(p, ROOT) for p in
                sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))]
    return cpp_extension.CUDAExtension(
        "vocabxfer._C", sources, py_limited_api=True,
        extra_compile_args={"cxx": cxx_args, "nvcc": nvcc_args},
        extra_link_args=["-fopenmp"])


setup(
    packages=find_packages(include=["vocabxfer", "vocabxfer.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
