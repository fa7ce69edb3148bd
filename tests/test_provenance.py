"""The provenance's source identity: full sha256 up to 64 MiB or with --full-hash, else a sampled fingerprint."""
from __future__ import annotations

import hashlib
import json
import shutil

from writer import provenance
from writer.provenance import sampled_fingerprint


def test_sampled_fingerprint_reads_samples_and_names_the_content(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(hashlib.sha256(str(i).encode()).digest()[0] for i in range(8 << 20))  # 8 MiB: sampled, not whole
    big.write_bytes(data)
    copy = tmp_path / "elsewhere" / "other-name.bin"
    copy.parent.mkdir()
    shutil.copyfile(big, copy)
    first = sampled_fingerprint(big)
    assert first.startswith("sampled-sha256:") and len(first) == len("sampled-sha256:") + 64
    assert sampled_fingerprint(copy) == first  # where the file lies and its name do not matter
    for offset in (0, len(data) - 1, (1 << 20) + 5):  # head, tail, first sampled block
        changed = bytearray(data)
        changed[offset] ^= 1
        big.write_bytes(changed)
        assert sampled_fingerprint(big) != first, offset
    big.write_bytes(data + b"\0")
    assert sampled_fingerprint(big) != first  # the size counts
    folder = tmp_path / "elsewhere"
    assert sampled_fingerprint(folder) != first  # a folder's fingerprint covers its files' relative names


def test_convert_writes_fingerprint_over_the_limit_and_sha256_when_asked(tmp_path, monkeypatch):
    from bench import checkpoints
    from writer.convert import ConvertOptions, convert

    source = tmp_path / "m.msgpack"
    checkpoints.write_mlp_msgpack(source, 16, 2)
    monkeypatch.setattr(provenance, "FULL_HASH_LIMIT", 100)  # the tiny checkpoint counts as big

    def identity(out, **options):
        convert(source, tmp_path / out, ConvertOptions(**options))
        return json.loads((tmp_path / out / "model.json").read_text())["userDefinedMetadata"]["flax2tfjs"]["source"]

    sampled = identity("sampled")
    assert "sha256" not in sampled and sampled["fingerprint"] == sampled_fingerprint(source)
    full = identity("full", full_hash=True)
    assert "fingerprint" not in full and full["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert list(full) == ["name", "format", "sha256", "step"]  # the same place as before: small outputs unchanged
