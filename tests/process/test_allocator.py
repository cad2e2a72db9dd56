"""Allocator tuning and returning freed memory: applied on glibc, harmless elsewhere."""

import platform

import pytest

from m3u_proxy.process.allocator import MemoryReturn, malloc_trim, tune_allocator


class TestTuneAllocator:
    @pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
    def test_thresholds_are_applied_on_glibc(self) -> None:
        """On glibc both mallopt calls succeed, so the copy loop stops trimming the heap."""
        assert tune_allocator() is True

    def test_unknown_libc_is_left_alone(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a C library to load, nothing is changed and False is returned."""
        monkeypatch.setattr("ctypes.util.find_library", lambda _name: None)
        assert tune_allocator() is False


class Trims:
    """Counts the trims `MemoryReturn` asks for."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


class TestMemoryReturn:
    def test_trims_once_after_the_load_ends_and_stays_gone(self) -> None:
        """200 clients for a minute, then none: one trim, `settle` seconds after the drop."""
        trims = Trims()
        decider = MemoryReturn(trims, settle=5, min_gap=10)
        for _ in range(60):
            decider.tick(200)
        results = [decider.tick(0) for _ in range(30)]
        assert trims.count == 1
        assert results.index(True) == 4  # the fifth second at zero

    def test_steady_load_is_never_trimmed(self) -> None:
        """Clients that come and go around a steady level never trigger a trim."""
        trims = Trims()
        decider = MemoryReturn(trims, settle=5, min_gap=10)
        for second in range(600):
            decider.tick(180 + second % 40)
        assert trims.count == 0

    def test_a_brief_dip_is_not_trimmed(self) -> None:
        """A drop shorter than `settle` seconds (a zap wave) is left alone."""
        trims = Trims()
        decider = MemoryReturn(trims, settle=5, min_gap=10)
        for _ in range(20):
            decider.tick(100)
        for _ in range(3):
            decider.tick(10)
        for _ in range(20):
            decider.tick(100)
        assert trims.count == 0

    def test_falling_in_steps_trims_at_most_every_min_gap(self) -> None:
        """A load halving every second trims again only after `min_gap` seconds."""
        trims = Trims()
        decider = MemoryReturn(trims, settle=1, min_gap=10)
        decider.tick(1024)
        count = 1024
        for _ in range(10):
            count //= 2
            decider.tick(count)
        assert trims.count == 1
        for _ in range(20):
            decider.tick(0)
        assert trims.count == 2

    def test_an_idle_proxy_is_never_trimmed(self) -> None:
        """No client ever: nothing was freed, so nothing is trimmed."""
        trims = Trims()
        decider = MemoryReturn(trims)
        for _ in range(100):
            decider.tick(0)
        assert trims.count == 0

    @pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
    def test_malloc_trim_is_found_and_runs_on_glibc(self) -> None:
        """On glibc the trim function exists and can be called in this process."""
        trim = malloc_trim()
        assert trim is not None
        trim()

    def test_no_trim_without_a_c_library(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a C library to load there is no trim function (and no task work)."""
        monkeypatch.setattr("ctypes.util.find_library", lambda _name: None)
        assert malloc_trim() is None
