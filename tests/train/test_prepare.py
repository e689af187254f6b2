"""prepare.tokenize encodes each pair at one prompt start (shared-prompt packing needs it)."""

from __future__ import annotations

from smorm.train.prepare import LoadedData, tokenize
from smorm.types import PreferencePair, RatedResponse

HI = [{"role": "user", "content": "hi"}]


def test_pairs_share_their_prompt_tokens_and_truncation_is_counted(tiny_tokenizer):
    pairs = [
        PreferencePair(prompt=HI, chosen="yo", rejected="abcdef", source="a"),  # 25 and 29 tokens: cut at 27
        PreferencePair(prompt=HI, chosen="y", rejected="z", source="b"),  # 24 tokens each: fits
    ]
    ratings = [RatedResponse(prompt=HI, response="abcdef", ratings={"help": 1.0}, source="r")]
    data = tokenize(LoadedData(pairs, ratings, ["help"], {}, []), tiny_tokenizer, max_length=27, show_progress=False)
    assert data.chosen_prompt_lengths == data.rejected_prompt_lengths == [19, 21]
    for c, r, start in zip(data.chosen, data.rejected, data.chosen_prompt_lengths):
        assert c[:start] == r[:start]
    assert [len(x) for x in data.chosen] == [23, 24] and [len(x) for x in data.rejected] == [27, 24]
    # the first pair's two sequences and the rated one (21 + 8 > 27) were cut
    assert data.truncated == 3 and data.rating_prompt_lengths == [19]
    assert data.sources == ["a", "b"] and data.pair_source_ids == [0, 1]
