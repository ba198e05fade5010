"""Service start-up helpers."""

import platform

import pytest

from common.service import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_allocator_tuning_is_accepted_by_glibc():
    # mallopt returns 0 for a value it refuses (e.g. an mmap threshold above its 32 MiB cap).
    assert tune_allocator() is True
