# Entry point: MicroPython runs main.py after boot. Picks the board, runs the application.
import asyncio

import board
from app import App


def run():
    asyncio.run(App(board.create()).main())


run()
