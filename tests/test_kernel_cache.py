"""Numba's on-disk cache of fastrnn's kernels is keyed on every kernel module's source, not only on the
kernel's own file: a kernel carries compiled into it what it calls from other files (fastrnn._numba)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

from numba.core import caching

from fastrnn import _numba, cell_kernels

# one cached kernel compiled (or loaded) in a fresh process, with Numba reporting what its cache did
SCRIPT = textwrap.dedent("""
    import numpy as np
    from fastrnn_copy import stack_kernels
    out = np.empty(2)
    stack_kernels.sum_rows(out, np.ones((3, 2)), 0)
    assert out.tolist() == [3.0, 3.0]
""")


def _run(root, cache):
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(cache), NUMBA_DEBUG_CACHE="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "stack_kernels.sum_rows" in line]
    return "saved" if any("data saved" in line for line in lines) else "loaded" if lines else "none"


def test_editing_another_kernel_module_recompiles_a_cached_kernel(tmp_path):
    """sum_rows lives in stack_kernels.py; an edit of gate_math.py alone must still recompile it. (The copy
    has a name of its own: an editable install's finder would import ``fastrnn`` from the checkout.)"""
    root = tmp_path / "copy"
    shutil.copytree(_numba.PACKAGE_FOLDER, root / "fastrnn_copy", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    assert _run(root, cache) == "saved"
    assert _run(root, cache) == "loaded"
    with open(root / "fastrnn_copy" / "gate_math.py", "a") as f:
        f.write("\n# an edit\n")
    assert _run(root, cache) == "saved"
    assert _run(root, cache) == "loaded"


def test_the_digest_follows_each_kernel_module(tmp_path):
    for name in _numba.KERNEL_MODULES:
        shutil.copy(os.path.join(_numba.PACKAGE_FOLDER, name), tmp_path / name)
    before = _numba.kernel_sources_digest(str(tmp_path))
    assert before == _numba.kernel_sources_digest()
    for name in _numba.KERNEL_MODULES:
        path = tmp_path / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert _numba.kernel_sources_digest(str(tmp_path)) != before, name
        path.write_bytes(original)
        os.utime(path, ns=(0, 0))  # another stamp, the same contents
        assert _numba.kernel_sources_digest(str(tmp_path)) == before, name


def test_fastrnn_files_get_the_keyed_locators_and_others_numbas(tmp_path):
    impl = caching.CompileResultCacheImpl(cell_kernels.lstm_forward.py_func)
    locator = impl.locator
    assert isinstance(locator, (_numba.UserDirLocator, _numba.InTreeLocator, _numba.UserWideLocator))
    assert locator.get_source_stamp()[1] == _numba.kernel_sources_digest()
    other = tmp_path / "elsewhere.py"
    other.write_text("def f():\n    return 1\n")
    namespace = {}
    exec(compile(other.read_text(), str(other), "exec"), namespace)
    for cls in (_numba.UserDirLocator, _numba.InTreeLocator, _numba.UserWideLocator):
        assert cls.from_function(namespace["f"], str(other)) is None


def test_every_module_that_compiles_is_a_kernel_module():
    """A module defining compiled functions (through _numba's decorators, numba.njit or an intrinsic) that
    KERNEL_MODULES missed would leave the kernels that call it keyed on stale code."""
    compiles = re.compile(r"^from \._numba import|numba\.njit\(|^@intrinsic|^@(exact|fast|fast_inline|parallel)$",
                          re.MULTILINE)
    found = {name for name in os.listdir(_numba.PACKAGE_FOLDER) if name.endswith(".py")
             and compiles.search(open(os.path.join(_numba.PACKAGE_FOLDER, name)).read())}
    assert found | {"_numba.py"} == set(_numba.KERNEL_MODULES)
