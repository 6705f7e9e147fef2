"""The firmware as a ROMFS image (MicroPython 1.25+): a read-only, memory-mappable filesystem whose
`.mpy` bytecode runs in place. The format and writer are mpremote's (`mpremote romfs build`)."""

from __future__ import annotations

from mpremote.romfs import VfsRomWriter

from .image import ImageFile


def build_romfs(files: list[ImageFile]) -> bytes:
    """One image holding `files` (absolute paths such as /app.mpy or /drivers/gps.mpy)."""
    tree: dict = {}
    for f in files:
        *dirs, name = f.path.strip("/").split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
            if not isinstance(node, dict):
                raise ValueError(f"{f.path}: {d} is both a file and a directory")
        if name in node:
            raise ValueError(f"{f.path}: listed twice")
        node[name] = f.data
    writer = VfsRomWriter()
    _write(writer, tree)
    return writer.finalise()


def _write(writer: VfsRomWriter, node: dict) -> None:
    for name in sorted(node):
        entry = node[name]
        if isinstance(entry, dict):
            writer.opendir(name)
            _write(writer, entry)
            writer.closedir()
        else:
            writer.mkfile(name, entry)
