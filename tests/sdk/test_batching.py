from dataclasses import dataclass, field

import torch

from alignflow.sdk.batching import PADDED, SHARED, batch_size, concat, repeat_interleave, select


@dataclass
class Item:
    x: torch.Tensor
    extra: dict
    name: str = "n"
    sched: torch.Tensor = field(default=None, metadata=SHARED)


def test_select_concat_repeat_follow_the_batch_and_keep_shared_fields():
    a = Item(torch.arange(4), {"y": torch.arange(4) * 10}, sched=torch.tensor([1.0, 0.0]))
    s = select(a, torch.tensor([3, 1]))
    assert s.x.tolist() == [3, 1] and s.extra["y"].tolist() == [30, 10] and s.name == "n"
    assert s.sched.tolist() == [1.0, 0.0]
    r = repeat_interleave(select(a, [0, 1]), 2)
    assert r.x.tolist() == [0, 0, 1, 1]
    c = concat([a, select(a, [0])])
    assert c.x.tolist() == [0, 1, 2, 3, 0] and batch_size(c) == 5
    assert c.sched.tolist() == [1.0, 0.0]


def test_padded_fields_join_batches_of_other_lengths():
    """A PADDED token sequence and its mask (a VL encoder's output, as long as its batch's
    longest prompt) are zero-padded to the longest when batches join; other fields
    join as they are, and a None PADDED field stays None."""

    @dataclass
    class Cond:
        embeds: torch.Tensor = field(metadata=PADDED)
        mask: torch.Tensor = field(metadata=PADDED)
        other: torch.Tensor
        null: torch.Tensor | None = field(default=None, metadata=PADDED)

    a = Cond(torch.ones(2, 3, 4), torch.ones(2, 3), torch.zeros(2, 5))
    b = Cond(torch.full((1, 5, 4), 2.0), torch.ones(1, 5), torch.ones(1, 5))
    joined = concat([a, b])
    assert joined.embeds.shape == (3, 5, 4) and joined.mask.tolist()[0] == [1, 1, 1, 0, 0]
    assert joined.embeds[:2, 3:].abs().sum() == 0 and (joined.embeds[2] == 2).all()
    assert joined.other.shape == (3, 5) and joined.null is None
