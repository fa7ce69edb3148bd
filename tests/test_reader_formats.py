"""The reader registry (writer/readers/formats.py) is what the dispatch and the studio use: one list, no copies."""
from __future__ import annotations

import re

import numpy as np
import pytest
from flax import serialization

from tests.conftest import ROOT
from topology.vocabulary.errors import ConversionError
from writer.commands.studio.paths import CHECKPOINT_SUFFIXES, ORBAX_MARKERS
from writer.readers import read_checkpoint
from writer.readers.formats import FORMATS, file_suffixes, folder_format, folder_markers, format_of_head


def test_every_file_format_is_read_by_its_own_entry(tmp_path):
    tree = {"params": {"Dense_0": {"kernel": np.ones((2, 3), np.float32)}}}
    (tmp_path / "m.msgpack").write_bytes(serialization.to_bytes(tree))
    np.savez(tmp_path / "m.npz", **{"params/Dense_0/kernel": np.ones((2, 3), np.float32)})
    for suffix in file_suffixes():
        path = tmp_path / f"m{suffix}"
        declared = format_of_head(path.read_bytes()[:8])
        assert declared is not None and suffix in declared.suffixes
        checkpoint = read_checkpoint(path)
        assert checkpoint.format == declared.name
        assert checkpoint.tensors[("params", "Dense_0", "kernel")].shape == (2, 3)


def test_a_folder_is_read_as_the_folder_format():
    checkpoint = read_checkpoint(ROOT / "examples" / "mnist_ckpt")
    assert checkpoint.format == folder_format().name == "orbax"
    assert any((ROOT / "examples" / "mnist_ckpt" / marker).exists() for marker in folder_markers())


def test_no_format_claims_an_image_or_unknown_bytes(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))  # 0x89 is also a msgpack map's first byte
    with pytest.raises(ConversionError, match="is a PNG image"):
        read_checkpoint(png)
    assert format_of_head(b"hello wo") is None


def test_the_studio_lists_and_accepts_what_the_registry_declares():
    assert CHECKPOINT_SUFFIXES == file_suffixes() == (".msgpack", ".npz")
    assert ORBAX_MARKERS == folder_markers()
    page = (ROOT / "web_demo" / "studio.html").read_text(encoding="utf-8")
    accept = re.search(r'id="upload-input" type="file" accept="([^"]+)"', page).group(1)
    assert tuple(accept.split(",")) == file_suffixes(), "web_demo/studio.html's file picker lists other suffixes"
    assert len({f.name for f in FORMATS}) == len(FORMATS)
