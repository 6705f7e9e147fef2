# Small integer counters kept on flash (boot count, event counter, command counter).
# Each is one file, written to a temporary name and renamed, so a power cut leaves the old or the
# new value, never half of one.
import os

from compat import makedirs
from protocol import EPOCH_LEN, valid_epoch


class Counters:
    def __init__(self, directory):
        self.dir = directory
        makedirs(directory)
        self._cache = {}

    def _path(self, name):
        return self.dir + "/" + name

    def get(self, name, default=0):
        if name in self._cache:
            return self._cache[name]
        try:
            with open(self._path(name)) as f:
                v = int(f.read().strip() or default)
        except (OSError, ValueError):
            v = default
        self._cache[name] = v
        return v

    def set(self, name, value):
        tmp = self._path(name) + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(value))
        os.rename(tmp, self._path(name))
        self._cache[name] = value

    def text(self, name):
        """A short text kept on flash ('' when there is none)."""
        try:
            with open(self._path(name)) as f:
                return f.read().strip()
        except OSError:
            return ""

    def set_text(self, name, value):
        """Write it (temporary name, then rename); False when flash refused it."""
        try:
            tmp = self._path(name) + ".tmp"
            with open(tmp, "w") as f:
                f.write(value)
            os.rename(tmp, self._path(name))
            return True
        except OSError:
            return False

    def epoch(self, fresh):
        """This install's epoch (protocol.EPOCH_LEN hex digits), drawn at random the first time, on a
        fresh filesystem, and kept. fresh(n) -> n random bytes. When flash refuses to keep it, the
        epoch lives for this boot only: the next boot draws another, and its counter goes on, so an
        (epoch, counter) pair is still never used twice."""
        ep = self._cache.get("epoch")
        if ep:
            return ep
        ep = self.text("epoch")
        if not valid_epoch(ep):
            ep = "".join("%02x" % b for b in fresh(EPOCH_LEN // 2))
            self.set_text("epoch", ep)
        self._cache["epoch"] = ep
        return ep

    def next(self, name):
        """Increment and persist before returning, so a value is never handed out twice."""
        v = self.get(name) + 1
        self.set(name, v)
        return v
