# A block device backed by a file, so the virtual board can mount the very LittleFS image that
# provisioning builds for a device (vfs.VfsLfs2) and the host can read back what the firmware wrote.
# Implements MicroPython's extended block protocol: readblocks/writeblocks with a byte offset, and
# ioctl 1 init, 2 deinit, 3 sync, 4 block count, 5 block size, 6 erase.

_ERASED = 0xFF  # NOR flash reads all ones after an erase


class FileBlockDevice:
    def __init__(self, path, block_size=4096):
        self.path = path
        self.block_size = block_size
        self.f = open(path, "r+b")
        self.f.seek(0, 2)
        size = self.f.tell()
        if size == 0 or size % block_size:
            self.f.close()
            raise ValueError("image size %d is not a whole number of %d-byte blocks" % (size, block_size))
        self.count = size // block_size
        self._blank = None

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * self.block_size + offset)
        n = self.f.readinto(buf)
        if n != len(buf):
            raise OSError(5)  # EIO: read past the end of the image

    def writeblocks(self, block, buf, offset=None):
        # offset None: the simple protocol (whole blocks, erase implied); LittleFS passes an offset
        # and erases through ioctl 6 first.
        if offset is None:
            offset = 0
        self.f.seek(block * self.block_size + offset)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 5:
            return self.block_size
        if op == 6:
            if self._blank is None:
                self._blank = bytes([_ERASED]) * self.block_size
            self.f.seek(arg * self.block_size)
            self.f.write(self._blank)
            return 0
        if op == 3:
            self.f.flush()
            return 0
        if op in (1, 2):
            if op == 2:
                self.f.flush()
            return 0
        return None

    def close(self):
        self.f.close()
