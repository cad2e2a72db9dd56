"""Allocator tuning: applied on glibc, harmless elsewhere."""

import platform

import pytest

from m3u_proxy.process.allocator import tune_allocator


class TestTuneAllocator:
    @pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
    def test_thresholds_are_applied_on_glibc(self) -> None:
        """On glibc both mallopt calls succeed, so the copy loop stops trimming the heap."""
        assert tune_allocator() is True

    def test_unknown_libc_is_left_alone(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a C library to load, nothing is changed and False is returned."""
        monkeypatch.setattr("ctypes.util.find_library", lambda _name: None)
        assert tune_allocator() is False
