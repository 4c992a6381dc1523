"""Which filesystems hold a folder, and whether inotify there sees every change.

inotify reports what this kernel does to a filesystem. On a local disk that is every change;
on NFS, SMB, FUSE (sshfs, rclone mount, ...) or a cluster filesystem, writes made by another
machine reach the files without any event here. A folder remote on such a filesystem must be
listed at every poll; on a local one its watch can stand in for the listing.
"""

from __future__ import annotations

import os
import re

MOUNTS_FILE = "/proc/self/mounts"

#: Filesystems whose every change passes through this kernel. Anything else (nfs, nfs4, cifs,
#: smb3, 9p, fuse.*, fuseblk, ceph, glusterfs, virtiofs, ...) is treated as shared.
LOCAL_FILESYSTEMS = frozenset(
    {
        "btrfs",
        "bcachefs",
        "exfat",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "hfsplus",
        "jfs",
        "msdos",
        "nilfs2",
        "ntfs",
        "ntfs3",
        "overlay",
        "ramfs",
        "reiserfs",
        "tmpfs",
        "vfat",
        "xfs",
        "zfs",
    }
)

_OCTAL = re.compile(r"\\([0-7]{3})")


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of /proc/self/mounts, in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            # The kernel writes space, tab, newline and backslash in paths as octal escapes.
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
            mounts.append((point, fields[2]))
    return mounts


def _within(path: str, folder: str) -> bool:
    return folder in (path, "/") or path.startswith(folder.rstrip("/") + "/")


def unwatchable_reason(folder: str, mounts: list[tuple[str, str]]) -> str | None:
    """None when the filesystem holding `folder` and every one mounted below it is local;
    otherwise which one is not ("/mnt/share is nfs4")."""
    real = os.path.realpath(folder)
    holding: tuple[str, str] | None = None
    for point, fstype in mounts:
        # The longest mount point above the folder holds it; of equal ones the last mounted
        # hides the others.
        if _within(real, point) and (holding is None or len(point) >= len(holding[0])):
            holding = (point, fstype)
    if holding is None:
        return f"no mount holds {real}"
    below = [(p, t) for p, t in mounts if p != real and _within(p, real)]
    for point, fstype in [holding, *below]:
        if fstype not in LOCAL_FILESYSTEMS:
            return f"{point} is {fstype}"
    return None


def local_filesystem_reason(folder: str) -> str | None:
    """`unwatchable_reason` against this process's mount table."""
    try:
        with open(MOUNTS_FILE, encoding="utf-8", errors="surrogateescape") as table:
            return unwatchable_reason(folder, parse_mounts(table.read()))
    except OSError as exc:
        return f"cannot read {MOUNTS_FILE}: {exc.strerror}"
