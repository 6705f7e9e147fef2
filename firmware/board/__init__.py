# The board layer: everything hardware-specific stays behind this small interface.
# Two implementations: board.esp32 (real hardware) and board.virtual (the MicroPython unix port).
import sys


def create():
    if sys.platform == "esp32":
        from board.esp32 import Board
    else:
        from board.virtual import Board
    return Board()
