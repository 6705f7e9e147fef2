# The board contract (firmware/board/__init__.py) is met by both boards. The ESP32 board imports
# machine and network, which exist only on the chip, so it is read, not imported.
import board.contract as board

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
BOARD_DIR = HERE + "/../../firmware/board/"


def _defined(path):
    """Names a board class defines: `def name(` and `name = ` at class level (4 spaces in)."""
    names = []
    with open(path) as f:
        for line in f:
            if line.startswith("    def ") or line.startswith("    async def "):
                names.append(line.split("def ", 1)[1].split("(")[0])
            elif line.startswith("    ") and not line.startswith("     ") and " = " in line:
                names.append(line.strip().split(" ")[0])
            elif line.startswith("        self.") and " = " in line:
                names.append(line.strip()[5:].split(" ")[0])
    return names


def test_both_boards_provide_every_name_of_the_contract():
    for f in ("esp32.py", "virtual.py"):
        have = _defined(BOARD_DIR + f)
        for name in board.METHODS + board.ATTRIBUTES:
            assert name in have, "%s lacks %s" % (f, name)


def test_the_virtual_board_answers_the_rig():
    from board.virtual import Board

    b = Board()
    b.setup({"sensors": []}, {})
    b.rig_button(True)
    assert b.button_pressed()
    b.rig_network(False)
    assert not b.isconnected()
    assert b.rig_sensors() is None and b.rig_always
