"""Builds zerotuning._C against the torch already installed (pip install --no-build-isolation).

The CPU kernel is compiled for the best vector instruction set of the build machine (AVX-512,
else AVX2, else portable code); set ZEROTUNING_CPU_ISA=avx512|avx2|default to choose. The CUDA
kernels are built when torch has CUDA and nvcc is found; ZEROTUNING_WITH_CUDA=0 or 1 forces it.
"""

import glob
import os
import sys

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from cpu_isa import ISA_FLAGS, build_machine_isa  # noqa: E402

# The translation units that get the vector-ISA flags (everything that includes score_rows.h).
KERNEL_SOURCES = tuple(
    os.path.join("csrc", "cpu", name) for name in ("sink_attention_cpu_kernel.cpp", "sink_attention_backward_kernel.cpp", "sink_attention_paged_kernel.cpp")
)


def want_cuda() -> bool:
    forced = os.environ.get("ZEROTUNING_WITH_CUDA")
    if forced is not None:
        return forced == "1"
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


class BuildExtensionWithKernelFlags(cpp_extension.BuildExtension):
    """Adds the vector-ISA flags to the CPU kernels' translation units only, so the rest of the
    library (including the CPU check that guards the kernel) runs on any CPU."""

    def build_extension(self, ext):
        compile_one = self.compiler._compile
        isa_flags = ISA_FLAGS[ISA]

        def compile_with_kernel_flags(obj, src, ext_, cc_args, extra_postargs, pp_opts):
            if os.path.normpath(src).endswith(KERNEL_SOURCES):
                if isinstance(extra_postargs, dict):
                    extra_postargs = {**extra_postargs, "cxx": extra_postargs["cxx"] + isa_flags}
                else:
                    extra_postargs = list(extra_postargs) + isa_flags
            return compile_one(obj, src, ext_, cc_args, extra_postargs, pp_opts)

        self.compiler._compile = compile_with_kernel_flags
        try:
            super().build_extension(ext)
        finally:
            self.compiler._compile = compile_one


ISA = build_machine_isa()
WITH_CUDA = want_cuda()

sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
cxx_flags = ["-O3", "-std=c++17", "-fopenmp", f'-DZEROTUNING_CPU_ISA="{ISA}"']
extra_compile_args = {"cxx": cxx_flags}
Extension = cpp_extension.CppExtension
if WITH_CUDA:
    # ZEROTUNING_CUDA_ARCHS: the compute capabilities to build kernels for (default "80 90");
    # scripts/check_cuda_compile.sh reads the same variable. The kernels need sm_80+ (cp.async).
    cuda_archs_setting = os.environ.get("ZEROTUNING_CUDA_ARCHS", "80 90")
    cuda_archs = cuda_archs_setting.replace(",", " ").split()
    if not cuda_archs or not all(arch.isdigit() and int(arch) >= 80 for arch in cuda_archs):
        raise SystemExit(
            f"ZEROTUNING_CUDA_ARCHS={cuda_archs_setting!r}: expected compute capabilities >= 80, like '80 90'"
        )
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    extra_compile_args["nvcc"] = ["-O3", "-std=c++17", "--expt-relaxed-constexpr"] + [
        f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in cuda_archs
    ]
    Extension = cpp_extension.CUDAExtension

setup(
    ext_modules=[
        Extension(
            "zerotuning._C",
            sources,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtensionWithKernelFlags.with_options(use_ninja=False)},
)
