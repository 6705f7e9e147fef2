# The flash outbox: every alarm, fault and other event is written here before its first send and
# leaves only when the bridge acks it as stored (docs/protocol.md section 4).
#
# One file per event, named by its counter so a directory listing is the send order:
#   <ctr:08d>.k  events that are never evicted (alarm, prealarm, cancel)
#   <ctr:08d>.e  events that may be evicted when the outbox is full (fault, restore, test)
# Written to <name>.tmp then renamed: a power cut leaves a whole record or none.
import os

from compat import makedirs
from protocol import KEEP


class Outbox:
    def __init__(self, directory, limit=64):
        self.dir = directory
        self.limit = limit
        makedirs(directory)
        self.evicted = 0
        self._clean_tmp()

    def _clean_tmp(self):
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):
                os.remove(self.dir + "/" + name)

    def _names(self):
        names = [n for n in os.listdir(self.dir) if n.endswith(".k") or n.endswith(".e")]
        names.sort()
        return names

    def __len__(self):
        return len(self._names())

    def put(self, ctr, type, frame):
        """Persist one event. Returns True when it is on flash; False when flash refused it
        (the caller still sends it from RAM and raises an outbox fault)."""
        names = self._names()
        while len(names) >= self.limit:
            victim = None
            for n in names:
                if n.endswith(".e"):
                    victim = n
                    break
            if victim is None:
                break  # only never-evict events left: keep them all, write this one too
            os.remove(self.dir + "/" + victim)
            names.remove(victim)
            self.evicted += 1
        name = "%08d.%s" % (ctr, "k" if type in KEEP else "e")
        tmp = self.dir + "/" + name + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(frame)
            os.rename(tmp, self.dir + "/" + name)
            return True
        except OSError:
            try:
                os.remove(tmp)
            except OSError:
                pass
            return False

    def full(self):
        """At its limit with alarms, prealarms and cancels alone (never evicted). Faults and the like
        are not counted: the outbox fault's own event must not make the outbox look less full."""
        k = 0
        for n in self._names():
            if n.endswith(".k"):
                k += 1
        return k >= self.limit

    def read(self, ctr):
        """One event's frame, or None when it is no longer here."""
        for suffix in (".k", ".e"):
            path = "%s/%08d%s" % (self.dir, ctr, suffix)
            try:
                with open(path, "rb") as f:
                    return f.read(os.stat(path)[6])  # one buffer of the exact size
            except OSError:
                pass
        return None

    def ctrs(self):
        return [int(n[:8]) for n in self._names()]

    def remove(self, ctr):
        for suffix in (".k", ".e"):
            try:
                os.remove("%s/%08d%s" % (self.dir, ctr, suffix))
                return True
            except OSError:
                pass
        return False
