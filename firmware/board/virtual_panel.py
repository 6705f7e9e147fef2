# The virtual board's panel inputs: one simulated line per input, driven by the rig's `panel`
# command, read as the pin of a real board's end-of-line network would be (panel.volts). Apart
# from board/virtual.py so that a virtual board without panel inputs never loads it: the names a
# module brings are interned for good, and a panic button's heap has no room for them.
from panel import volts

_net = None
_lines = {}  # input name -> its line


class Line:
    """The resistance on one line (None: cut), the normal EOL resistance until the rig says otherwise."""

    def __init__(self, net):
        self.ohms = net["r_eol"]

    def read_uv(self):
        return int(volts(_net, self.ohms) * 1000000)


def setup(net):
    global _net
    _net = net
    _lines.clear()
    for i in net["inputs"]:
        _lines[i["name"]] = Line(net)


def get(name):
    return _lines.get(name)


def set(name, ohms):
    if name not in _lines:
        raise ValueError("no panel input %r (inputs: %s)" % (name, ", ".join(_lines) or "none"))
    _lines[name].ohms = ohms
