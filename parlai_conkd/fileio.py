"""The mode of a file written through a temporary file: what a plain ``open(path, 'w')`` gives.

``tempfile.mkstemp`` creates files owner-only (0600) whatever the umask, so an output renamed
into place from one was unreadable for the group, unlike every other output of a run (model files,
dictionaries, logs) on a shared datapath. Call :func:`match_umask` on the temporary file before
the rename.
"""
import os


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for a moment, in every
    thread) where Linux reports it; else by setting and restoring it."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_file_mode() -> int:
    """0o666 without the umask's bits: e.g. 0o644 under umask 022, 0o640 under 027."""
    return 0o666 & ~umask()


def match_umask(path_or_fd) -> None:
    """Give a temporary file (path or open descriptor) the mode a plain ``open`` would have."""
    if isinstance(path_or_fd, int):
        os.fchmod(path_or_fd, plain_file_mode())
    else:
        os.chmod(path_or_fd, plain_file_mode())
