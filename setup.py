"""Builds the Cython kernels in native/ against OpenSSL's libcrypto.

RELAYFORGE_NO_EXTENSIONS=1 skips them, and a failed build is not fatal: the package then runs on
its pure-Python twins.
migrations/*.sql are copied into the package so that a wheel can migrate a database too.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildPyWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "relayforge" / "_migrations"
        target.mkdir(parents=True, exist_ok=True)
        for sql in sorted((ROOT / "migrations").glob("*.sql")):
            shutil.copy2(sql, target / sql.name)


def extensions() -> list:
    if os.environ.get("RELAYFORGE_NO_EXTENSIONS") == "1":
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    ext = Extension(
        "relayforge._native",
        ["native/_native.pyx"],
        libraries=["crypto"],
        extra_compile_args=["-O3"],
    )
    built = cythonize([ext], compiler_directives={"language_level": "3"}, annotate=False)
    for extension in built:
        # No compiler or OpenSSL headers: install anyway, on the pure-Python twins (the
        # startup log and `relayforge doctor` say so; CI checks the compiled ones are built).
        # Set after cythonize(), which doesn't carry the flag over.
        extension.optional = True
    return built


setup(ext_modules=extensions(), cmdclass={"build_py": BuildPyWithMigrations})
