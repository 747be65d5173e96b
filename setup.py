"""Build forkwait's Cython modules, with OpenMP where the compiler has it.

Environment switches (all optional):

FORKWAIT_FAIL_NO_OPENMP=1  fail the build when OpenMP is not available
FORKWAIT_DISABLE_OPENMP=1  build the serial version even where OpenMP works
FORKWAIT_DEBUG=1           Cython bounds/wraparound checks on, -O0 -g
FORKWAIT_SANITIZE=...      e.g. "address,undefined": build with sanitizers
FORKWAIT_PORTABLE=1        no -march=native (for binaries run on other CPUs)
FORKWAIT_ANNOTATE=1        write Cython's annotated HTML next to each .pyx
FORKWAIT_BUILD_ONLY=a,b    (development) build only the named _native modules
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE = os.path.join("forkwait", "_native")

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d %d\\n", n, _OPENMP);
        return n > 0 ? 0 : 1;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiler_cmd():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def _try_compile(cflags, ldflags):
    """Compile, link and run the OpenMP probe; True when it works."""
    cc = _compiler_cmd()
    if shutil.which(cc[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        try:
            subprocess.run(
                cc + cflags + [src, "-o", exe] + ldflags,
                check=True,
                capture_output=True,
                timeout=120,
            )
            out = subprocess.run([exe], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return bool(out.stdout.strip())


def openmp_flags():
    """(compile_args, link_args) for OpenMP, or None when it is not available."""
    if _env_flag("FORKWAIT_DISABLE_OPENMP"):
        return None
    candidates = [
        (["-fopenmp"], ["-fopenmp"]),  # gcc, clang with libomp installed
        (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),  # Apple clang + libomp
    ]
    for cflags, ldflags in candidates:
        if _try_compile(cflags, ldflags):
            return cflags, ldflags
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        flags = openmp_flags()
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
        if not (debug or sanitize or _env_flag("FORKWAIT_PORTABLE")):
            opt.append("-march=native")
        extra = ["-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unreachable-code"]
        san = []
        if sanitize:
            san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
        for ext in self.extensions:
            ext.extra_compile_args = cflags + opt + extra + san + ext.extra_compile_args
            ext.extra_link_args = ldflags + san + ext.extra_link_args
        super().build_extensions()


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
