"""Which folder a pair's local root is: its filesystem's id and its inode number, recorded in
the state when the pair first syncs there.

A disk that is not mounted leaves its mount point behind, an empty folder at the same path on
another filesystem; a root renamed away and made anew is another inode. Taken for the synced
folder, its emptiness read as "every file deleted" (the bucket wiped at `max_delete: 100`), and
what came down landed on the wrong disk, then went up over the other machines' edits once the
disk was back. (Syncthing keeps a `.stfolder` marker in the folder for this; syncd writes
nothing into the root that the user did not put there.) The filesystem id (`statvfs`'s
`f_fsid`, derived from the filesystem's UUID on ext4 and btrfs) stays the same when the disk
comes back, where its device number may not.
"""

from __future__ import annotations

import os
from pathlib import Path


def look(root: Path) -> tuple[str, tuple[int, int]] | None:
    """The folder at `root` (a symlink to it followed: a configured root may be one): its
    "FSID:INODE", kept in the state, and its (device, inode), for `same_folder` while this
    process runs; None when there is no folder there to tell."""
    try:
        st = os.stat(root)
        fsid = os.statvfs(root).f_fsid
    except OSError:
        return None
    return f"{fsid:x}:{st.st_ino}", (st.st_dev, st.st_ino)


def same_folder(root: Path, seen: tuple[int, int]) -> bool:
    """A quick look, for each path synced: is `root` still the folder whose (device, inode)
    the last full look saw? A disk unmounted under a running daemon is not."""
    try:
        st = os.stat(root)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == seen
