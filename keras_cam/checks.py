"""Argument checks shared by the library's entry points."""

import numpy as np


def check_int(value, name, minimum=1):
    """Refuses a value that is not an integer >= ``minimum`` (bools and floats included).

    ``int()`` would turn 2.7 into 2 and True into 1 without a word, so a library
    call with such a value gets an error naming it instead.

    Args:
        value: the argument (Python or NumPy integer).
        name: how the message names it (an argument or a flag).
        minimum: the smallest value allowed.

    Returns:
        ``value`` as a Python int.

    Raises:
        ValueError: ``"{name} must be a positive integer. Received: {name}=..."`` (or
            ``"an integer >= {minimum}"``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}. Received: {name}={value!r}")
    return int(value)
