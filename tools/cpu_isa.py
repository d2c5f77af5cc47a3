"""Which vector instruction set to compile the CPU kernel for, shared by setup.py and CMake.

The build machine's best of AVX-512 and AVX2 (else portable code); ZEROTUNING_CPU_ISA=avx512,
avx2 or default overrides it. `python tools/cpu_isa.py` prints the ISA name and then its compiler
flags separated by ';' (a CMake list).
"""

import os
import platform

ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY=zt_avx512", "-DCPU_CAPABILITY_AVX512"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=zt_avx2", "-DCPU_CAPABILITY_AVX2"],
    "default": ["-DCPU_CAPABILITY=zt_default"],
}

REQUIRED_CPU_FLAGS = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c"},
    "avx2": {"avx2", "fma", "f16c"},
}


def build_machine_isa() -> str:
    chosen = os.environ.get("ZEROTUNING_CPU_ISA")
    if chosen:
        if chosen not in ISA_FLAGS:
            raise SystemExit(f"ZEROTUNING_CPU_ISA={chosen!r}: expected one of {sorted(ISA_FLAGS)}")
        return chosen
    if platform.machine() not in ("x86_64", "AMD64"):
        return "default"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "default"
    for isa in ("avx512", "avx2"):
        if REQUIRED_CPU_FLAGS[isa] <= set(flags):
            return isa
    return "default"


if __name__ == "__main__":
    isa = build_machine_isa()
    print(isa)
    print(";".join(ISA_FLAGS[isa]))
