"""keras_cam.checks: integers are integers, whatever int() would make of them."""

import numpy as np
import pytest

from keras_cam.checks import check_int


@pytest.mark.parametrize("value, minimum, expected", [(1, 1, 1), (np.int64(7), 1, 7), (np.uint8(2), 2, 2), (0, 0, 0)])
def test_integers_at_or_above_the_minimum_come_back_as_int(value, minimum, expected):
    result = check_int(value, "n", minimum)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value, minimum, message", [
    (0, 1, "n must be a positive integer. Received: n=0"),
    (2.7, 1, "n must be a positive integer. Received: n=2.7"),
    (3.0, 1, "n must be a positive integer. Received: n=3.0"),
    (True, 1, "n must be a positive integer. Received: n=True"),
    ("4", 1, "n must be a positive integer. Received: n='4'"),
    (None, 1, "n must be a positive integer. Received: n=None"),
    (1, 2, "n must be an integer >= 2. Received: n=1"),
    (np.float64(5), 2, "n must be an integer >= 2. Received: n=np.float64(5.0)"),
])
def test_anything_else_is_refused_by_name(value, minimum, message):
    with pytest.raises(ValueError) as info:
        check_int(value, "n", minimum)
    assert str(info.value) == message
