"""Waiting on conditions with a deadline, never on the clock alone."""

import time
from collections.abc import Callable


def wait_for[T](predicate: Callable[[], T], timeout: float, describe: str, interval: float = 0.2) -> T:
    """Call `predicate` until it returns something truthy and return that.

    On timeout raise TimeoutError naming what was awaited and the last value or error observed.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except Exception as e:  # noqa: BLE001 - the last error is part of the timeout message
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {describe}; last: {last!r}")
        time.sleep(interval)
