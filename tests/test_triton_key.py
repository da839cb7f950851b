"""Triton's installation hash is computed once per installation and reused (bsmamba2.model.mixers.triton_key);
a changed installation (another stamp) computes it again; the opt-out leaves Triton's function alone."""

from __future__ import annotations

from pathlib import Path

import pytest

tc = pytest.importorskip("triton.runtime.cache")

from bsmamba2.model.mixers import triton_key  # noqa: E402


def test_the_hash_is_stored_and_reused_until_the_installation_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fake_original() -> str:  # stands in for Triton's 500 MB hash
        calls.append(1)
        return f"key-{len(calls)}"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tc, "triton_key", fake_original)
    assert triton_key.install()
    assert tc.triton_key() == "key-1" and len(calls) == 1
    assert (tmp_path / "bsmamba2" / "triton_key.json").is_file()
    assert triton_key.install()  # installed already: nothing recomputed
    # a new process: Triton's own function again, the stored value returned without calling it
    monkeypatch.setattr(tc, "triton_key", fake_original)
    assert triton_key.install() and tc.triton_key() == "key-1" and len(calls) == 1
    # the installation changed: computed again
    stamp = triton_key._stamp
    monkeypatch.setattr(triton_key, "_stamp", lambda root, version: [*stamp(root, version), "rebuilt"])
    monkeypatch.setattr(tc, "triton_key", fake_original)
    assert triton_key.install() and tc.triton_key() == "key-2" and len(calls) == 2


def test_opt_out_and_unwritable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_original() -> str:
        return "k"

    monkeypatch.setattr(tc, "triton_key", fake_original)
    monkeypatch.setenv("BSMAMBA2_TRITON_KEY_CACHE", "0")
    assert not triton_key.install() and tc.triton_key is fake_original
    monkeypatch.delenv("BSMAMBA2_TRITON_KEY_CACHE")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # the cache folder cannot be made
    assert triton_key.install() and tc.triton_key() == "k"
