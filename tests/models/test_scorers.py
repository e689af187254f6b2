"""`available_modes`: the modes a scorer offers follow from its heads' names, unless it declares them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from smorm.models.scorers import available_modes


@pytest.mark.parametrize(
    ("heads", "modes"),
    [
        (("single",), ["F"]),                            # a SORM, a min ensemble
        (("multi",), ["L"]),                             # a MORM
        (("single", "multi"), ["F", "L", "M"]),          # SMORM, Baseline SM
        (("multi", "single", "gate"), ["F", "L", "M", "G"]),
        (("multi", "gate"), ["L", "G"]),
        (("single", "length"), ["F"]),                   # ODIN's length head is not a mode
    ],
)
def test_modes_follow_the_heads(heads, modes):
    assert available_modes(SimpleNamespace(heads=heads)) == modes


def test_declared_modes_win():
    # A Hugging Face classifier declares F only, whatever its heads are called.
    assert available_modes(SimpleNamespace(heads=("single", "multi"), modes=("F",))) == ["F"]
