"""Builds the compiled part of the `vismem` Python package with the project's CMake.

    python3 -m pip install --no-build-isolation .

The extension (target _vismem) is built in build/pip-<python tag>/ (a CMake tree
of its own, ccache used when installed), or in VISMEM_BUILD_DIR when that names
an already configured tree (e.g. build/, to reuse what scripts/build.sh made).
Nothing is fetched from the network: CMake finds pybind11 and the libraries
that scripts/setup.sh installs.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        build_dir = os.environ.get("VISMEM_BUILD_DIR")
        if build_dir and (Path(build_dir) / "CMakeCache.txt").exists():
            build_dir = Path(build_dir).resolve()
        else:
            build_dir = Path(build_dir or ROOT / "build" / ("pip-" + sys.implementation.cache_tag)).resolve()
            args = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DPython_EXECUTABLE=" + sys.executable, "-DVISMEM_BENCH=OFF"]
            if shutil.which("ccache"):
                args += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache", "-DCMAKE_C_COMPILER_LAUNCHER=ccache"]
                # as scripts/build.sh: relative paths, so objects compiled for build/ are reused
                os.environ.setdefault("CCACHE_BASEDIR", str(ROOT.parent))
            subprocess.run(args, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_vismem", "-j", jobs], check=True)
        built = build_dir / "python" / "vismem" / ("_vismem" + suffix)
        if not built.exists():
            found = sorted(p.name for p in (build_dir / "python" / "vismem").glob("_vismem*"))
            raise RuntimeError("%s: no %s (found %s): that tree was configured for another Python; "
                               "unset VISMEM_BUILD_DIR" % (build_dir, built.name, found or "nothing"))
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(
    ext_modules=[Extension("vismem._vismem", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": "build/setuptools"}, "egg_info": {"egg_base": "build"}},
)
