"""unique_inverse: np.unique's distinct values and inverse, by counting where the values span a small range."""

from __future__ import annotations

import numpy as np
import pytest

from llmpulse.processors.core.grouping import unique_inverse


@pytest.mark.parametrize(("size", "low", "span"), [
    (0, 0, 1), (1, 5, 1), (31_500, 0, 240), (2_000, -3_000, 500),  # codes, slots shifted below zero
    (500, 1_796_649_864_136 // 3_600_000, 3),  # hours of a record's calls
    (1_000, 0, 1 << 40),  # a range far wider than the rows: sorted as np.unique does
])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64])
def test_unique_inverse_is_numpys(size: int, low: int, span: int, dtype: type) -> None:
    if np.iinfo(dtype).min > low or np.iinfo(dtype).max < low + span:
        pytest.skip("values beyond the type")
    values = np.random.default_rng(size).integers(low, low + span, size).astype(dtype)
    uniques, inverse = unique_inverse(values)
    expected_uniques, expected_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(uniques, expected_uniques)
    np.testing.assert_array_equal(inverse, expected_inverse)
    assert uniques.dtype == values.dtype and inverse.dtype == np.int64
