"""OSErrors said plainly, for messages that name a path the user gave."""

from __future__ import annotations


def not_a_folder_or(exc: OSError) -> str:
    """What went wrong making a folder or a file in it: a file where a folder of the path
    belongs makes "File exists" (EEXIST) or "Not a directory" (ENOTDIR), read as "not a
    folder"; anything else is the system's own words."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "not a folder"
    return exc.strerror or str(exc)
