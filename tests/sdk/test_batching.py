from dataclasses import dataclass, field

import torch

from alignflow.sdk.batching import SHARED, batch_size, concat, repeat_interleave, select


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
