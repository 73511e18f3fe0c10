"""The layout of the design card installs as alignflow.*, and importing the core is cheap."""

import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CODE = {"sdk": "alignflow.sdk", "modalities": "alignflow.modalities", "adapters": "alignflow.adapters",
        "rewards": "alignflow.rewards", "configs": "alignflow.configs"}


def test_every_package_folder_is_listed_in_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in CODE.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"add to / remove from pyproject's packages: {sorted(found ^ listed)}"


def test_importing_the_core_imports_no_model_library():
    code = ("import sys, alignflow.sdk.trainer, alignflow.sdk.kernels, alignflow.sdk.cli; "
            "print(sorted(m for m in ('diffusers', 'transformers', 'torchaudio', 'peft', 'datasets', "
            "'alignflow.adapters.image.sd3', 'alignflow.rewards.image.digits') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_shipped_files_are_package_data():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = meta["tool"]["setuptools"]["package-data"]
    assert "data/*.jsonl" in data["alignflow.modalities.image"] and "data/*.jsonl" in data["alignflow.modalities.video"]
    for pkg, folder in (("alignflow.adapters.image", "adapters/image/assets"),
                        ("alignflow.adapters.video", "adapters/video/assets"),
                        ("alignflow.rewards.image", "rewards/image/assets")):
        assert "assets/**/*" in data[pkg] and any((ROOT / folder).rglob("*.safetensors"))


def test_shipped_prompt_files_match_their_generator(tmp_path):
    from alignflow.modalities.image import digits, words

    for data in (digits, words):
        data.write_prompt_files(tmp_path)
        for path in data.PROMPT_FILES.values():
            assert (tmp_path / path.name).read_text() == path.read_text()


def test_shipped_speech_prompts_match_their_generator_and_audio():
    import json

    from alignflow.modalities.speech import sentences

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "data/refs/*.wav" in meta["tool"]["setuptools"]["package-data"]["alignflow.modalities.speech"]
    for split, path in sentences.PROMPT_FILES.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows == sentences.prompt_rows(split)
        assert all((sentences.DATA_DIR / r["ref_audio"]).is_file() for r in rows)
