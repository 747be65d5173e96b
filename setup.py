"""Build forkwait's Cython modules, with OpenMP where the compiler has it.

Environment switches (all optional):

FORKWAIT_FAIL_NO_OPENMP=1  fail the build when OpenMP is not available
FORKWAIT_DISABLE_OPENMP=1  build the serial version even where OpenMP works
FORKWAIT_DEBUG=1           Cython bounds/wraparound checks on, -O0 -g
FORKWAIT_SANITIZE=...      e.g. "address,undefined": build with sanitizers
FORKWAIT_NATIVE=1          -march=native instead of the portable baseline (x86-64-v2
                           plus runtime-dispatched AVX2/AVX-512 loops); for a build
                           that only ever runs on the machine that compiled it
FORKWAIT_ANNOTATE=1        write Cython's annotated HTML next to each .pyx
FORKWAIT_BUILD_ONLY=a,b    (development) build only the named _native modules
"""

import glob
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.errors import CompileError, LinkError
except ImportError:  # setuptools < 59
    from distutils.errors import CompileError, LinkError

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE = os.path.join("forkwait", "_native")

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        printf("%d\\n", n);
        return 0;
    }
    """
)

# The CPU variants of the hot loops (forkwait/_native/_fw_kernels.c), x86-64 only:
# (name, compiler flags, macro the dispatcher sees). The baseline is the build's
# own flags. No FMA is written in the source and -ffp-contract=off forbids the
# compiler's own, so every variant computes the same bits.
X86_VARIANTS = [
    ("avx2", ["-mavx2", "-mfma"], "FW_BUILT_AVX2"),
    ("avx512", ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
     "FW_BUILT_AVX512"),
]
KERNELS_C = os.path.join(NATIVE, "_fw_kernels.c")
# the extensions that call the hot loops link the variants (and _dispatch picks one)
USES_KERNELS = ("_dispatch",)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_list(name):
    return shlex.split(os.environ.get(name, ""))


def _is_x86_64():
    return platform.machine().lower() in ("x86_64", "amd64")


class BuildExt(build_ext):
    """build_ext with OpenMP where the compiler has it, portable flags, and the
    hot loops compiled once per CPU variant."""

    def _compile_and_run(self, source, cflags, ldflags, run=True):
        """Compile (and link and run) a test program with this build's compiler
        and the user's CFLAGS/LDFLAGS; its stdout, or None if any step fails."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(source)
            try:
                objs = self.compiler.compile(
                    [src], output_dir=tmp, extra_postargs=cflags + _env_list("CFLAGS")
                )
                if not run:
                    return ""
                self.compiler.link_executable(
                    objs, "probe", output_dir=tmp, extra_postargs=ldflags + _env_list("LDFLAGS")
                )
                env = dict(os.environ, OMP_NUM_THREADS="2")
                out = subprocess.run(
                    [os.path.join(tmp, "probe")], capture_output=True, timeout=60, env=env,
                    check=True, text=True,
                )
            except (CompileError, LinkError, OSError, subprocess.SubprocessError):
                return None
            return out.stdout

    def openmp_flags(self):
        """(compile_args, link_args) for OpenMP, or None when it is not available.

        As scikit-learn's check: the probe is compiled, linked and run, and it
        must print the thread count of a 2-thread region (a compiler that accepts
        -fopenmp but ignores it prints 1)."""
        if _env_flag("FORKWAIT_DISABLE_OPENMP"):
            return None
        candidates = [
            (["-fopenmp"], ["-fopenmp"]),  # gcc, clang with libomp installed
            (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),  # Apple clang + libomp
        ]
        for cflags, ldflags in candidates:
            out = self._compile_and_run(OPENMP_TEST, cflags, ldflags)
            if out is not None and out.strip() == "2":
                return cflags, ldflags
        return None

    def _accepts(self, flags):
        return self._compile_and_run("int main(void) { return 0; }\n", flags, [], run=False) is not None

    def baseline_flags(self):
        """The portable baseline: x86-64-v2 on x86-64 (or FORKWAIT_NATIVE=1:
        -march=native, for binaries that stay on the machine that built them)."""
        if _env_flag("FORKWAIT_NATIVE"):
            return ["-march=native"]
        if _is_x86_64():
            for flags in (["-march=x86-64-v2"], ["-msse4.2", "-mpopcnt", "-mssse3"]):
                if self._accepts(flags):
                    return flags
        return []

    def tls_flags(self):
        """TLS descriptors on x86-64 where the compiler has them: the pool's
        thread-local state is read on every fork and wait, and a descriptor
        call costs a few instructions where __tls_get_addr costs a dozen
        (the fork/wait round trip 2.5% faster here; other CPUs need none)."""
        if _is_x86_64() and self._accepts(["-mtls-dialect=gnu2"]):
            return ["-mtls-dialect=gnu2"]
        return []

    def build_extensions(self):
        flags = self.openmp_flags()
        if flags is None:
            msg = (
                "forkwait: the C compiler has no working OpenMP; building the serial "
                "version (kernels run on one thread; the inter-op pool is unaffected). "
                "To get intra-op parallelism install OpenMP (Debian/Ubuntu: gcc "
                "already has it, or `apt-get install libomp-dev` for clang; macOS: "
                "`brew install libomp`) and rebuild."
            )
            if _env_flag("FORKWAIT_FAIL_NO_OPENMP"):
                raise RuntimeError(msg + " FORKWAIT_FAIL_NO_OPENMP is set, so this is an error.")
            warnings.warn(msg, stacklevel=1)
            print("WARNING: " + msg, file=sys.stderr)
            cflags, ldflags = [], []
        else:
            cflags, ldflags = flags
        debug = _env_flag("FORKWAIT_DEBUG")
        sanitize = os.environ.get("FORKWAIT_SANITIZE", "").strip()
        opt = ["-O0", "-g"] if (debug or sanitize) else ["-O3"]
        # no floating-point contraction the source does not write: the same bits
        # from every build (DESIGN.md rule 9)
        opt += self.baseline_flags() + ["-ffp-contract=off"] + self.tls_flags()
        extra = ["-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unreachable-code", "-Wno-psabi"]
        san = []
        if sanitize:
            san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
        self._base = opt + extra + san
        self._variants = None
        for ext in self.extensions:
            ext.extra_compile_args = cflags + opt + extra + san + ext.extra_compile_args
            ext.extra_link_args = ldflags + san + ext.extra_link_args
        super().build_extensions()

    def kernel_objects(self):
        """The hot loops compiled once per CPU variant: (objects, macros)."""
        if self._variants is not None:
            return self._variants
        variants = [("baseline", [], None)]
        if _is_x86_64() and not _env_flag("FORKWAIT_NATIVE"):
            variants += [v for v in X86_VARIANTS if self._accepts(v[1])]
        objs, macros = [], []
        for name, vflags, macro in variants:
            objs += self.compiler.compile(
                [KERNELS_C],
                output_dir=os.path.join(self.build_temp, "variant_" + name),
                macros=[("FW_VARIANT", name)],
                include_dirs=[NATIVE],
                extra_postargs=self._base + vflags,
                depends=_native_depends(),
            )
            if macro:
                macros.append((macro, "1"))
        self._variants = objs, macros
        return self._variants

    def build_extension(self, ext):
        if ext.name.rsplit(".", 1)[1] in USES_KERNELS:
            objs, macros = self.kernel_objects()
            ext.extra_objects = list(ext.extra_objects or []) + objs
            ext.define_macros = list(ext.define_macros or []) + macros
        super().build_extension(ext)


def _native_depends():
    """The hand-written files a native module is built from besides its .pyx:
    the C headers and the pool's included files (cythonize follows .pxd and
    .pxi files itself; the C compiler's inputs are listed here so that editing
    one rebuilds the module)."""
    return sorted(set(
        glob.glob(os.path.join(NATIVE, "*.h"))
        + glob.glob(os.path.join(NATIVE, "*.pxi"))
        + glob.glob(os.path.join(NATIVE, "_pool", "*.h"))
        + glob.glob(os.path.join(NATIVE, "_pool", "*.pxi"))
    ))


def extensions():
    from Cython.Build import cythonize

    debug = _env_flag("FORKWAIT_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
        "binding": True,
        # every module is safe without the GIL (docs/freethreading.md): a
        # free-threaded CPython keeps the GIL off when forkwait is imported
        "freethreading_compatible": True,
    }
    only = [m.strip() for m in os.environ.get("FORKWAIT_BUILD_ONLY", "").split(",") if m.strip()]
    exts = []
    for pyx in sorted(glob.glob(os.path.join(NATIVE, "*.pyx"))):
        name = os.path.splitext(pyx)[0].replace(os.sep, ".")
        if only and name.rsplit(".", 1)[1] not in only:
            continue
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[NATIVE, __import__("numpy").get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                # rebuild when a hand-written header, an included .pxi (the pool's
                # concepts under _pool/, _blas's _blas_*.pxi) or the variants'
                # source changes
                depends=_native_depends()
                + ([KERNELS_C] if name.rsplit(".", 1)[1] in USES_KERNELS else []),
            )
        )
    return cythonize(
        exts,
        compiler_directives=directives,
        annotate=_env_flag("FORKWAIT_ANNOTATE"),
        force=debug or bool(os.environ.get("FORKWAIT_SANITIZE")),
        nthreads=int(os.environ.get("FORKWAIT_CYTHON_JOBS", "0")) or None,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
