"""File names that come from outside (uploads, URLs, a server's answer) made safe to use as names."""
from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Optional


def safe_file_name(name: Optional[str], fallback: str = "image") -> str:
    """The last part of `name` (after either slash), so that no name is a path."""
    last = PureWindowsPath(PurePosixPath(name or "").name).name.strip()
    return last if last not in ("", ".", "..") else fallback
