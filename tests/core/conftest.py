"""Under CPython, pytest collects the core tests directly; `async def` tests run with asyncio.run."""

import asyncio
import inspect
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent / "firmware"))
sys.path.insert(0, str(HERE))


def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        asyncio.run(pyfuncitem.obj())
        return True
    return None
