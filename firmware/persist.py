# Small integer counters kept on flash (boot count, event counter, command counter).
# Each is one file, written to a temporary name and renamed, so a power cut leaves the old or the
# new value, never half of one.
import os

from compat import makedirs


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

    def next(self, name):
        """Increment and persist before returning, so a value is never handed out twice."""
        v = self.get(name) + 1
        self.set(name, v)
        return v
