"""Embedded synthetic video pose benchmark: DeepMimic motion capture (shipped with
pybullet) drives rendered people; written in the PoseTrack18 layout so the same dataset
class, metric and tools run on it. See docs/SYNTH.md."""
from __future__ import annotations

from glsmamba.synth.generate import GENERATOR_VERSION, SynthOptions, generate_dataset, image_id
from glsmamba.synth.preview import make_preview

__all__ = ["GENERATOR_VERSION", "SynthOptions", "generate_dataset", "image_id", "make_preview"]
