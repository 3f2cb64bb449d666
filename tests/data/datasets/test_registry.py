"""Dataset registry: parsers register themselves where they are defined; a new parser file
in the datasets folder needs no other edit."""
from __future__ import annotations

import sys

import pytest

import glsmamba.data.datasets as datasets
from glsmamba.errors import ConfigError

TOY_PARSER = '''
from glsmamba.data.datasets._posetrack_base import PoseTrackBase
from glsmamba.data.datasets.registry import register_dataset


@register_dataset("toy_dropped_in")
class ToyDroppedIn(PoseTrackBase):
    metric = "pck"
'''


def test_bundled_parsers_register_themselves():
    assert {"posetrack17", "posetrack18", "posetrack21", "jhmdb", "jhmdb_mat"} <= set(
        datasets.list_datasets())
    assert datasets.get_dataset("posetrack18") is datasets.PoseTrack18Dataset
    with pytest.raises(ConfigError, match="unknown dataset type 'nope'.*posetrack18"):
        datasets.get_dataset("nope")


def test_a_parser_file_dropped_in_the_folder_registers_itself(tmp_path, monkeypatch):
    (tmp_path / "toy_dropped_in.py").write_text(TOY_PARSER)
    monkeypatch.setattr(datasets, "__path__", [*datasets.__path__, str(tmp_path)])
    monkeypatch.delitem(datasets.DATASETS, "toy_dropped_in", raising=False)
    try:
        datasets.import_parsers()
        parser = datasets.get_dataset("toy_dropped_in")
        assert parser.dataset_type == "toy_dropped_in" and parser.metric == "pck"
    finally:
        datasets.DATASETS.pop("toy_dropped_in", None)
        sys.modules.pop("glsmamba.data.datasets.toy_dropped_in", None)
