"""Apps under test reuse the exit keeper the session compiled once, instead of compiling it in each data folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.runner.keeper import KeeperKind, keeper_command
from service.settings import Settings


def with_prebuilt_keeper(settings: Settings, keeper_build_dir: Path) -> Settings:
    """Copy the session's compiled keeper into `settings.data_dir/bin`, where the app looks for it first."""
    command = keeper_command(KeeperKind.AUTO, keeper_build_dir)
    if command is not None and len(command) == 1:  # the compiled one (the Python twin is a script, run in place)
        target = settings.data_dir / "bin" / Path(command[0]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(command[0], target)
    return settings
