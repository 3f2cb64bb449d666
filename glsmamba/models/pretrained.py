"""Where ``model.pretrained`` points: a spec -> local weight file(s) + their SHA-256.

Accepted specs (everything :func:`glsmamba.models.vitpose.load_vitpose` reads):

* an official ViTPose ``.pth`` (mmcv ``{"state_dict": ...}``) or a ``.safetensors`` file;
* a transformers ``save_pretrained`` folder (``config.json`` + ``model.safetensors``,
  sharded or not);
* ``hf://OWNER/NAME`` or ``hf://OWNER/NAME@REVISION``: a Hugging Face Hub repository
  (``VitPoseForPoseEstimation``, e.g. ``hf://usyd-community/vitpose-base``), resolved
  through huggingface_hub's cache. It is downloaded when online; with ``HF_HUB_OFFLINE=1``
  only the cache is read (``HF_HUB_CACHE`` / ``HF_HOME`` choose the cache, read at call time).

The SHA-256 of the resolved weights goes into a run's metadata, so that a result names the
exact encoder it was trained on (for a sharded folder: the SHA-256 of the sorted
``"<sha256>  <file name>"`` lines, as ``sha256sum`` prints them).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from glsmamba.errors import CheckpointError, ConfigError

HF_SCHEME = "hf://"
# files of a save_pretrained folder that hold weights, in order of preference
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin")
HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin"]
_CHUNK = 1 << 20


@dataclass
class ResolvedWeights:
    """A resolved ``model.pretrained``: what to load (``path``, a file or a folder), the
    weight files behind it and their SHA-256."""

    spec: str
    path: Path
    files: list[Path] = field(default_factory=list)
    sha256: str = ""

    def as_meta(self) -> dict:
        """The record written into a run's metadata."""
        return {"spec": self.spec, "path": str(self.path),
                "files": [f.name for f in self.files], "sha256": self.sha256}


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(path: Path) -> list[Path]:
    """The files holding the weights of ``path``: the file itself, or a folder's
    ``model.safetensors`` / its shards (from the index) / ``pytorch_model.bin``."""
    if path.is_file():
        return [path]
    for name in WEIGHT_FILES:
        candidate = path / name
        if not candidate.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(candidate.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"{candidate}: not a safetensors index ({err})") from None
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise CheckpointError(f"{candidate}: shard {missing[0]} is missing")
            return [path / s for s in shards]
        return [candidate]
    raise CheckpointError(f"{path}: no {', '.join(WEIGHT_FILES)} in this folder (not a "
                          "save_pretrained folder)")


def combined_sha256(files: list[Path]) -> str:
    """One file: its SHA-256; several: SHA-256 of their sorted ``sha256sum`` lines."""
    if len(files) == 1:
        return sha256_file(files[0])
    lines = sorted(f"{sha256_file(f)}  {f.name}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``hf://OWNER/NAME[@REVISION]`` -> (repo id, revision or None)."""
    body = spec[len(HF_SCHEME):]
    repo, _, revision = body.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"model.pretrained = {spec!r}: expected hf://OWNER/NAME or "
                          "hf://OWNER/NAME@REVISION")
    return repo, revision or None


def hub_cache_dir() -> str | None:
    """The Hugging Face cache chosen by the environment now (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``; None = huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def download_hub(spec: str) -> Path:
    """The local snapshot folder of a ``hf://`` spec (downloaded unless offline)."""
    repo, revision = parse_hub_spec(spec)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"model.pretrained = {spec!r} needs huggingface_hub "
                          "(pip install huggingface_hub)") from None
    offline = hub_offline()
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=hub_cache_dir(),
                                   allow_patterns=HUB_PATTERNS, local_files_only=offline)
    except Exception as err:  # noqa: BLE001  offline cache miss, unknown repo, no network ...
        where = "in the Hugging Face cache (HF_HUB_OFFLINE=1)" if offline else "on the Hub"
        hint = (f"download it once online (huggingface-cli download {repo}) or point "
                "HF_HUB_CACHE at a cache that holds it") if offline else \
            "check the repo id and the network, or give a local file"
        raise CheckpointError(f"model.pretrained = {spec!r}: {repo} not found {where} "
                              f"({type(err).__name__}); {hint}") from None
    return Path(folder)


def resolve_pretrained(spec: str) -> ResolvedWeights | None:
    """``model.pretrained`` -> :class:`ResolvedWeights` (None for ""); a missing file or
    repo is a CheckpointError naming the spec."""
    spec = (spec or "").strip()
    if not spec:
        return None
    if spec.startswith(HF_SCHEME):
        path = download_hub(spec)
    else:
        path = Path(os.path.expanduser(spec))
        if not path.exists():
            raise CheckpointError(f"model.pretrained: {path}: file or folder not found")
    files = weight_files(path)
    return ResolvedWeights(spec, path, files, combined_sha256(files))


def encoder_env_var(arch: str) -> str:
    """The environment variable the bundled configs read for an encoder's weights:
    ``vit-b`` -> ``VITPOSE_B_CKPT`` (their convention)."""
    suffix = arch.split("-", 1)[-1].upper().replace("-", "_")
    return f"VITPOSE_{suffix}_CKPT"


def require_encoder_weights(config: dict, model) -> None:
    """A frozen encoder must get weights (model.pretrained or model.init_from): training
    on a random frozen encoder cannot work. ConfigError naming the key and the variable,
    unless ``model.random_encoder_ok = true`` (synthetic data, tests, the demo)."""
    model_cfg = config["model"]
    encoder = getattr(model, "encoder", None)
    if encoder is None or any(p.requires_grad for p in encoder.parameters()):
        return
    if model_cfg.get("pretrained") or model_cfg.get("init_from"):
        return
    if model_cfg.get("random_encoder_ok", False):
        return
    arch = getattr(encoder, "arch", "vit-b")
    raise ConfigError(
        f"the frozen {arch} encoder of {model_cfg.get('name')} has no weights: set "
        f"model.pretrained (an official ViTPose .pth, a .safetensors, a save_pretrained folder "
        f"or hf://OWNER/NAME; docs/DATASETS.md) or the environment variable "
        f"{encoder_env_var(arch)} that the bundled configs read, or model.init_from; "
        "model.random_encoder_ok = true trains on a random frozen encoder on purpose")
