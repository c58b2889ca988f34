"""Builds vocabxfer._C: a CUDA extension when the installed torch is a CUDA
build and a CUDA toolkit is found (or FORCE_CUDA=1), CPU-only otherwise
(or FORCE_ONLY_CPU=1). Whether a GPU is visible never matters, so a wheel for
a GPU server builds on a machine without one.

The module always links the shared C++ runtime (libstdc++.so.6) that torch
itself runs on, whatever compiler or wrapper builds it: a static copy of the
runtime beside torch's crashes the process on the first error message. A
build whose link still ends up with a static copy stops with a message.

Environment:
  FORCE_CUDA=1            build the CUDA kernels or fail trying
  FORCE_ONLY_CPU=1        build the CPU kernels only
  TORCH_CUDA_ARCH_LIST    GPU architectures, e.g. "8.0;9.0+PTX"
                          (default: Volta or Turing to Hopper, plus PTX)
  MAX_JOBS                parallel compile jobs (read by torch's BuildExtension)
  CUDA_HOME               the CUDA toolkit (default: /usr/local/cuda if present)
  CXX                     the C++ compiler (default: Python's)
  VOCABXFER_DEBUG=1       keep debug symbols and drop optimisation
"""

import glob
import importlib.util
import os
import shlex
import subprocess
import sysconfig
import tempfile
import warnings

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


def load_elf_reader():
    """vocabxfer/ops/elf.py on its own: the package cannot be imported before
    it is built."""
    spec = importlib.util.spec_from_file_location(
        "vocabxfer_elf", os.path.join(ROOT, "vocabxfer", "ops", "elf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def cxx_compiler() -> list:
    return shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")


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


def openmp_works() -> bool:
    """Whether the C++ compiler builds and links an OpenMP program (Apple's
    clang, for one, does not without extra setup)."""
    program = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "openmp.cpp")
        with open(source, "w") as handle:
            handle.write(program)
        try:
            result = subprocess.run(
                cxx_compiler() + ["-fopenmp", source, "-o", os.path.join(scratch, "openmp")],
                capture_output=True)
        except OSError:
            return False
    return result.returncode == 0


def loaded_cxx_runtime() -> "str | None":
    """The libstdc++.so.6 this process (and so torch) has loaded, or None
    where that cannot be read (not Linux, or no libstdc++)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so"):
                    return path
    except OSError:
        pass
    return None


def link_arguments() -> list:
    arguments = []
    runtime = loaded_cxx_runtime()
    if runtime:
        # Named as a file, torch's own runtime comes before the compiler's
        # implicit -lstdc++, which a wrapper may resolve to libstdc++.a.
        arguments.append(runtime)
    return arguments


def extension():
    debug = env_flag("VOCABXFER_DEBUG")
    # Python's own CFLAGS carry -g; -g0 drops the symbols that would double
    # the build time. nvcc adds none unless asked.
    cxx_args = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # No fused multiply-adds on either side (nvcc and aarch64 compilers fuse
    # by default, x86-64 ones do not): segment_mean_ then gives the same bits
    # on every CPU and GPU, as its tests check.
    cxx_args.append("-ffp-contract=off")
    link_args = link_arguments()
    # at::parallel_for is inlined into our code: without -fopenmp its
    # OpenMP pragmas are ignored and every "parallel" loop runs on one thread.
    if openmp_works():
        cxx_args.append("-fopenmp")
        link_args.append("-fopenmp")
    else:
        warnings.warn("vocabxfer: the C++ compiler has no OpenMP; the CPU kernels will run "
                      "on one thread (install OpenMP, e.g. libomp, for parallel CPU kernels)")
    nvcc_args = (["-O0", "-g", "-lineinfo"] if debug else ["-O3"]) + ["--fmad=false"]

    def sources(pattern):
        return [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, pattern)))]

    cpu_sources = sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp")
    # py_limited_api: torch defines Py_LIMITED_API for us, and one abi3 wheel
    # serves every CPython >= 3.9 for the torch it was built against.
    if not build_with_cuda():
        return cpp_extension.CppExtension(
            "vocabxfer._C", cpu_sources, py_limited_api=True,
            extra_compile_args={"cxx": cxx_args}, extra_link_args=link_args)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_cuda_arch_list())
    # Host fronts (.cpp) are compiled by the host compiler; the .cu files
    # hold only kernels and their launchers.
    cuda_sources = sources("csrc/cuda/*.cpp") + sources("csrc/cuda/*.cu")
    return cpp_extension.CUDAExtension(
        "vocabxfer._C", cpu_sources + cuda_sources, py_limited_api=True,
        extra_compile_args={"cxx": cxx_args, "nvcc": nvcc_args}, extra_link_args=link_args)


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, then a look at what the linker made."""

    def build_extension(self, ext):
        super().build_extension(ext)
        path = self.get_ext_fullpath(ext.name)
        problem = load_elf_reader().cxx_runtime_problem(path)
        if problem:
            os.remove(path)
            compiler = (getattr(self.compiler, "compiler_cxx", None) or cxx_compiler())[0]
            raise SystemExit(
                f"vocabxfer: refusing the build: {problem}. The C++ compiler ({compiler}) "
                "linked the C++ runtime statically (a wrapper that adds -static-libstdc++, or "
                "a -B folder holding only libstdc++.a, does this). Two C++ runtimes in one "
                "process crash on the first error message. Rebuild with a compiler that links "
                "libstdc++.so.6, e.g. CXX=/usr/bin/g++ CC=/usr/bin/gcc.")


setup(
    packages=find_packages(include=["vocabxfer", "vocabxfer.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
