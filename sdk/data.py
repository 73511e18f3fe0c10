"""Prompt datasets and the order in which a run visits them.

Prompts load through Hugging Face ``datasets`` from local files (txt, jsonl/json,
csv, parquet) or a folder written by ``Dataset.save_to_disk``. The prompt column
becomes the prompt; every other column reaches the rewards as per-sample metadata
(TRL-style), e.g. a GenEval-style spec or the text an OCR reward should read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.errors import DataError
from alignflow.sdk.random import generator

FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class PromptSet:
    prompts: list[str]
    metadata: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.prompts)


def load_prompts(
    path: str | Path, prompt_column: str = "prompt", field: str = "data.train"
) -> PromptSet:
    """Load a prompt file or saved dataset folder; errors name ``field`` and ``path``."""
    import datasets

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{field} = '{path}': no such file or folder")
    datasets.disable_progress_bars()
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    else:
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise DataError(
                f"{field} = '{path}': unsupported format {path.suffix!r}; accepted: "
                f"{sorted(FORMATS)} or a saved dataset folder"
            )
        if path.stat().st_size == 0:
            raise DataError(f"{field} = '{path}': the file is empty; it needs at least one prompt")
        try:
            ds = datasets.load_dataset(
                kind, data_files=str(path), split="train", keep_in_memory=True
            )
        except Exception as e:  # datasets wraps parser errors in many types
            if "corresponds to no data" in str(e):
                raise DataError(f"{field} = '{path}': no prompts in it") from e
            raise DataError(f"{field} = '{path}': could not be read as {kind}: {e}") from e
        if kind == "text":
            ds = ds.rename_column("text", prompt_column) if prompt_column != "text" else ds
    if prompt_column not in ds.column_names:
        raise DataError(
            f"{field} = '{path}': no column {prompt_column!r}; columns are {ds.column_names} "
            "(set data.prompt_column)"
        )
    rows = ds.to_list()
    prompts = [r.pop(prompt_column) for r in rows]
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise DataError(
            f"{field} = '{path}': rows {bad[:5]} have an empty or non-text {prompt_column!r}"
        )
    if not prompts:
        raise DataError(f"{field} = '{path}': no prompts in it")
    return PromptSet(prompts, rows)


class PromptSampler:
    """Which prompts iteration t uses: slots t*P .. t*P+P-1 of an endless stream of
    epochs, each a fresh permutation seeded by (seed, epoch). The data position is a
    function of the iteration, so a resumed run sees exactly the prompts it would
    have seen."""

    def __init__(self, num_prompts: int, per_iteration: int, seed: int):
        self.n, self.per_iteration, self.seed = num_prompts, per_iteration, seed
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (
                epoch,
                torch.randperm(self.n, generator=generator(self.seed, "data", epoch)),
            )
        return self._perm[1]

    def local_slots(self, iteration: int, rank: int, world: int) -> list[tuple[int, int]]:
        """(global slot, prompt index) of process ``rank``'s share of the iteration:
        contiguous blocks, so whole groups live on one process."""
        idx = self.indices(iteration)
        per = len(idx) // world
        return [(s, idx[s]) for s in range(rank * per, (rank + 1) * per)]

    def indices(self, iteration: int) -> list[int]:
        start = iteration * self.per_iteration
        return [
            int(self._permutation(p // self.n)[p % self.n])
            for p in range(start, start + self.per_iteration)
        ]
