"""Kernel cache safety: a library is loaded only from a private folder and only when its
bytes match the digest recorded at build time; an unusable folder falls back to chunked."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
import torch

from glsmamba.ops import scan_fused
from glsmamba.ops.scan_chunked import selective_scan_chunked
from glsmamba.ops.selective_scan import selective_scan

needs_compiler = pytest.mark.skipif(not scan_fused.compiler_command(), reason="no C compiler")

PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *out = getenv("GLSMAMBA_TEST_PLANTED");
    if (out) { FILE *f = fopen(out, "w"); if (f) { fputs("ran", f); fclose(f); } }
}
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(scan_fused.ENV_CACHE, str(root))
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    monkeypatch.setattr(scan_fused, "FLAG_VARIANTS", ([],))    # one quick portable build
    scan_fused.reset()
    yield root
    scan_fused.reset()


def _plant(tmp_path, target, monkeypatch):
    """Compile a library whose constructor writes a marker file, at the kernel's name."""
    source = tmp_path / "planted.c"
    source.write_text(PLANTED)
    target.parent.mkdir(parents=True, exist_ok=True)
    cc = scan_fused.compiler_command()
    built = tmp_path / "planted.so"       # a new file swapped in (never rewrite a loaded one)
    subprocess.run(cc + ["-shared", "-fPIC", str(source), "-o", str(built)], check=True)
    os.replace(built, target)
    marker = tmp_path / "marker"
    monkeypatch.setenv("GLSMAMBA_TEST_PLANTED", str(marker))
    return marker


def _target():
    compiler = scan_fused.compiler_command()
    return scan_fused.library_path(compiler, scan_fused.BASE_FLAGS + [])


def _inputs():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 4, 9, generator=g)
    delta = torch.rand(1, 4, 9, generator=g)
    A = -torch.rand(4, 3, generator=g) - 0.1
    B = torch.randn(1, 2, 3, 9, generator=g)
    C = torch.randn(1, 2, 3, 9, generator=g)
    return u, delta, A, B, C


@needs_compiler
def test_planted_library_in_world_writable_cache_is_not_loaded(cache, tmp_path, monkeypatch):
    target = _target()
    marker = _plant(tmp_path, target, monkeypatch)
    os.chmod(target.parent, 0o777)
    with pytest.warns(RuntimeWarning, match="cannot be used safely.*writable by group or others"):
        assert scan_fused.load_library() is None
    assert not marker.exists()
    y = selective_scan(*_inputs(), delta_softplus=True)        # falls back to chunked
    assert torch.equal(y, selective_scan_chunked(*_inputs(), delta_softplus=True))


@needs_compiler
def test_planted_library_without_matching_digest_is_rebuilt_not_loaded(cache, tmp_path, monkeypatch):
    target = _target()
    marker = _plant(tmp_path, target, monkeypatch)
    os.chmod(target.parent, 0o700)
    for digest in (None, "0" * 64):         # no digest file, then a wrong one
        if digest:
            target.with_name(target.name + ".sha256").write_text(digest)
        scan_fused.reset()
        with pytest.warns(RuntimeWarning, match="does not match the digest" if digest
                          else "has no recorded digest"):
            lib = scan_fused.load_library()
        assert lib is not None and not marker.exists()
        assert scan_fused.verified(target)
        _plant(tmp_path, target, monkeypatch)       # plant again over the genuine one


@needs_compiler
def test_cache_folder_owned_by_another_user_is_refused(cache, tmp_path, monkeypatch):
    target = _target()
    target.parent.mkdir(parents=True, mode=0o700)
    monkeypatch.setattr(scan_fused.os, "getuid", lambda: os.stat(target.parent).st_uid + 1)
    with pytest.warns(RuntimeWarning, match="owned by uid"):
        assert scan_fused.load_library() is None
    assert not list(target.parent.iterdir())


@needs_compiler
def test_shared_parent_without_sticky_bit_is_refused(cache, tmp_path):
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)                  # umask-proof
    with pytest.warns(RuntimeWarning, match="without the sticky bit"):
        assert scan_fused.load_library() is None
    os.chmod(cache, 0o777 | stat.S_ISVTX)   # like /tmp: fine
    scan_fused.reset()
    assert scan_fused.load_library() is not None
    assert stat.S_IMODE(os.stat(cache / "kernels").st_mode) == 0o700


@needs_compiler
def test_unwritable_cache_dir_falls_back_to_chunked_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(scan_fused.ENV_CACHE, str(blocker))
    monkeypatch.delenv("GLSMAMBA_SCAN_BACKEND", raising=False)
    scan_fused.reset()
    try:
        with pytest.warns(RuntimeWarning, match="kernel cache folder .*a_file"):
            y = selective_scan(*_inputs(), delta_softplus=True)
        assert torch.equal(y, selective_scan_chunked(*_inputs(), delta_softplus=True))
    finally:
        scan_fused.reset()


@needs_compiler
def test_build_records_digest_and_is_private(cache):
    assert scan_fused.load_library() is not None
    target = _target()
    digest = target.with_name(target.name + ".sha256")
    assert digest.read_text().strip() == scan_fused._sha256(target)
    assert stat.S_IMODE(os.stat(target.parent).st_mode) & 0o077 == 0
    assert not [p for p in target.parent.iterdir() if ".tmp" in p.name]
    tampered = target.with_name("tampered.tmp")          # a changed file swapped in (the
    tampered.write_bytes(target.read_bytes() + b"\0")    # loaded one must not be rewritten)
    os.replace(tampered, target)
    assert not scan_fused.verified(target)
    shutil.rmtree(target.parent)
