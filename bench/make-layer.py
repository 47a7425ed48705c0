#!/usr/bin/env python3
"""Writes a realistic tar layer of about SIZE_MB uncompressed bytes from files under a
directory tree (default /usr), deterministically ordered, skipping unreadable files.

usage: make-layer.py OUT.tar SIZE_MB [ROOT] [SKIP]
SKIP files are passed over first, so two layers from one tree hold different files."""
import os, sys, tarfile

out, size_mb = sys.argv[1], int(sys.argv[2])
root = sys.argv[3] if len(sys.argv) > 3 else "/usr"
skip = int(sys.argv[4]) if len(sys.argv) > 4 else 0
limit = size_mb * 1024 * 1024
total = 0
seen = 0
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            seen += 1
            if seen <= skip:
                continue
            try:
                tar.add(path, recursive=False)
            except OSError:
                continue
            total += st.st_size + 512
            if total >= limit:
                sys.exit(0)
