"""The removal of a recorded attempt's spent files: off the caller's thread, in order, waited for by flush()."""

from __future__ import annotations

import threading
from pathlib import Path

from service.domain.paths import AttemptFiles, attempt_files
from service.runner.cleanup import AttemptFileCleaner


def spent_attempt(output_dir: Path, job_id: int, *, stdout: bytes = b"") -> AttemptFiles:
    files = attempt_files(output_dir, job_id, 1)
    files.directory.mkdir(parents=True)
    files.stdout.write_bytes(stdout)
    files.stderr.write_bytes(b"")
    files.exit_status.write_text('{"exit_code":0}\n')
    return files


def remaining(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


async def test_spent_files_and_empty_folders_are_gone_once_flushed(tmp_path: Path) -> None:
    cleaner = AttemptFileCleaner()
    silent = [spent_attempt(tmp_path, job_id) for job_id in range(1, 51)]
    talkative = spent_attempt(tmp_path, 99, stdout=b"kept\n")

    for files in [*silent, talkative]:
        cleaner.remove(files)
    await cleaner.flush()

    assert remaining(tmp_path) == [
        talkative.directory.parent.name,
        talkative.directory.relative_to(tmp_path).as_posix(),
        talkative.stdout.relative_to(tmp_path).as_posix(),
    ], "output is kept; the exit status, empty output files and empty folders go"
    assert cleaner.removed == 50 * 5 + 2
    await cleaner.close()


async def test_the_removals_happen_in_a_thread_of_their_own_until_closed(tmp_path: Path) -> None:
    cleaner = AttemptFileCleaner()
    files = spent_attempt(tmp_path, 1)
    before = threading.active_count()

    cleaner.remove(files)
    await cleaner.flush()

    assert not files.directory.exists()
    assert threading.active_count() == before + 1, "one thread removes"
    assert any(thread.name == "attempt-file-cleaner" for thread in threading.enumerate())
    await cleaner.close()
    assert not any(thread.name == "attempt-file-cleaner" for thread in threading.enumerate())
    after_close = spent_attempt(tmp_path, 2)
    cleaner.remove(after_close)
    assert not after_close.directory.exists(), "after close, in place"
