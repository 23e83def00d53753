"""Builds the Cython kernels in native/ against OpenSSL's libcrypto.

RELAYFORGE_NO_EXTENSIONS=1 skips them, and a failed build is not fatal: the package then runs on
its pure-Python twins.
The top-level migrations/ folder is the package `relayforge.migrations` (package_dir), so an
installed wheel, an editable install and a checkout all read the same files through
importlib.resources, with no copy step.
"""

import os

from setuptools import find_packages, setup


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


setup(
    ext_modules=extensions(),
    packages=[*find_packages(include=["relayforge*"]), "relayforge.migrations"],
    package_dir={"relayforge.migrations": "migrations"},
)
