"""The image writer's before/after figure: an editing run's figure shows each row's
source and instruction beside the base's and the trained policy's edits."""

import numpy as np
import torch
from PIL import Image

from alignflow.modalities.image.io import ImageWriter


def test_an_edit_comparison_shows_each_rows_source_aligned_with_its_edits(tmp_path):
    g = torch.Generator().manual_seed(0)
    before, after = torch.rand(6, 1, 8, 8, generator=g), torch.rand(6, 1, 8, 8, generator=g)
    sources = [torch.full((1, 8, 8), v) for v in (0.0, 1.0, 0.5)]  # one per row of 2
    titles = ("base: " + "a long title " * 8, "trained")
    writer = ImageWriter()
    plain = writer.save_comparison(before, after, tmp_path / "plain", 2, titles)
    edits = writer.save_comparison(
        before, after, tmp_path / "edits", 2, titles, sources=sources, prompts=["make it"] * 3
    )
    plain, edits = np.asarray(Image.open(plain)), np.asarray(Image.open(edits))
    assert edits.shape[0] == plain.shape[0] and edits.shape[1] > plain.shape[1]
    # the sources' column: 64 px tiles (8 px x 8) under the shared title strip, one per row
    # of samples; the title wraps to as many lines in every panel, so rows stay aligned
    top = edits.shape[0] - 3 * 66 - 2
    column = [edits[top + 2 + 66 * r + 30, 30, 0] for r in range(3)]
    assert column == [0, 255, 128]
    first_sample = edits[top + 2 + 30, edits.shape[1] - plain.shape[1] + 30]
    assert (first_sample == plain[top + 2 + 30, 30]).all()


def test_a_long_comparison_shows_its_first_rows_and_says_so(tmp_path):
    images = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    writer = ImageWriter()
    path = writer.save_comparison(images, images, tmp_path / "long", 1, ("base", "trained"))
    full = writer.save_comparison(
        images, images, tmp_path / "full", 1, ("base", "trained"), max_rows=30
    )
    shown, full = Image.open(path), Image.open(full)
    assert full.height - shown.height >= 6 * 66 - 3 * 11  # 6 rows fewer (titles wrap more)
