"""app.memory: with glibc keeping freed memory, a big block freed and taken again costs no
page faults; without it every page is faulted in (zeroed by the kernel) again."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from app import cli, memory
from app.config import Settings

# malloc, touch and free 64 MB (over glibc's largest mmap threshold) three times, in the main
# thread and in a new one, in a fresh process so that the malloc options stay there; print
# the page faults of the last round of each.
_SCRIPT = """
import ctypes, json, resource, sys, threading
from app.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 2**20
faults = {}
def rounds(where):
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(size)  # as torch's CPU allocator does (no huge-page advice)
        ctypes.memset(block, 1, size)  # every page touched
        faults[where] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
        libc.free(block)
rounds("main")
thread = threading.Thread(target=rounds, args=("thread",))
thread.start()
thread.join()
print(json.dumps({"kept": kept, **faults}))
"""

_PAGES = 64 * 2**20 // 4096


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except AttributeError:
        return False
    return True


def _run(mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not _glibc(), reason="glibc's malloc only")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    default, kept = _run("default"), _run("keep")
    assert default["kept"] is None
    assert kept["kept"] is True
    for where in ("main", "thread"):
        assert int(default[where]) > _PAGES // 2  # type: ignore[call-overload]
        assert int(kept[where]) < _PAGES // 100  # type: ignore[call-overload]


def test_without_glibc_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    class Musl:  # a C library with a mallopt stub but not glibc's version call
        def mallopt(self, *_: int) -> int:
            raise AssertionError("must not be called")

    monkeypatch.setattr(memory.ctypes, "CDLL", lambda _: Musl())
    assert memory.keep_freed_memory() is False

    def no_library(_: object) -> object:
        raise OSError("no C library")

    monkeypatch.setattr(memory.ctypes, "CDLL", no_library)
    assert memory.keep_freed_memory() is False


def test_options_refused_report_false(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def refusing_mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 0  # mallopt's "no"

    libc = SimpleNamespace(gnu_get_libc_version=object(), mallopt=refusing_mallopt)
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda _: libc)
    assert memory.keep_freed_memory() is False
    assert calls == [(memory.M_ARENA_MAX, 1)]


@pytest.mark.parametrize("setting", [True, False])
def test_serve_keeps_freed_memory_first_when_set(
    monkeypatch: pytest.MonkeyPatch, setting: bool
) -> None:
    calls: list[str] = []

    class Stop(Exception):
        pass

    def preflight(_: Settings) -> None:
        calls.append("preflight")
        raise Stop

    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(cli, "preflight", preflight)
    settings = Settings(_env_file=None, keep_freed_memory=setting)  # type: ignore[call-arg]
    with pytest.raises(Stop):
        cli.cmd_serve(settings, None, None)
    # Before anything else runs: threads that allocate later then share the one heap.
    assert calls == (["kept", "preflight"] if setting else ["preflight"])
