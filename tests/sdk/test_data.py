import json

import pytest

from alignflow.sdk.data import PromptSampler, load_prompts
from alignflow.sdk.errors import DataError


def test_formats_load_with_metadata(tmp_path):
    rows = [
        {"prompt": "a cat", "digit": 1, "spec": "x"},
        {"prompt": "a dog", "digit": 2, "spec": "y"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.csv").write_text("prompt,digit\na cat,1\na dog,2\n")
    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    j = load_prompts(tmp_path / "p.jsonl")
    assert j.prompts == ["a cat", "a dog"] and j.metadata[1] == {"digit": 2, "spec": "y"}
    assert load_prompts(tmp_path / "p.csv").metadata[0] == {"digit": 1}
    assert load_prompts(tmp_path / "p.txt").prompts == ["a cat", "a dog"]


def test_parquet_and_saved_dataset_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"caption": "a", "k": 1}, {"caption": "b", "k": 2}])
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_prompts(tmp_path / "p.parquet", prompt_column="caption").prompts == ["a", "b"]
    assert load_prompts(tmp_path / "saved", prompt_column="caption").metadata == [
        {"k": 1},
        {"k": 2},
    ]


@pytest.mark.parametrize(
    "content,name,match",
    [
        (None, "missing.jsonl", "no such file"),
        ("", "empty.jsonl", "empty"),
        ("prompt\n", "header_only.csv", "no prompts"),
        ('{"text": "a"}\n', "wrong_column.jsonl", "no column 'prompt'.*\\['text'\\]"),
        ('{"prompt": ""}\n', "blank.jsonl", "empty or non-text"),
        ("<x/>", "p.xml", "unsupported format"),
        ("{not json", "broken.jsonl", "could not be read"),
    ],
)
def test_bad_prompt_files_are_named_in_the_error(tmp_path, content, name, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        load_prompts(path, field="data.train")
    assert "data.train" in str(e.value) and name in str(e.value)


def test_sampler_is_a_function_of_the_iteration_and_covers_every_epoch():
    s = PromptSampler(10, 4, seed=1)
    first = [s.indices(i) for i in range(5)]
    stream = [i for chunk in first for i in chunk]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    again = PromptSampler(10, 4, seed=1)
    assert again.indices(3) == first[3]  # no history needed: resume sees the same prompts
    assert PromptSampler(10, 4, seed=2).indices(0) != first[0]
