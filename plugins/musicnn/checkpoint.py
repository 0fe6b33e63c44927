"""Read a TensorFlow-1 Saver checkpoint (``.index`` + ``.data-*``) without TensorFlow.

The ``.index`` file is a LevelDB-format SSTable mapping each variable name to a small
``BundleEntryProto`` that says where the raw little-endian tensor bytes live in the ``.data``
shard. TensorFlow pins ancient numpy, so reading the few dozen bytes of structure by hand is far
cheaper than depending on it. Formats: leveldb ``doc/table_format.md`` and TensorFlow's
``tensor_bundle.proto``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
CRC_MASK_DELTA = 0xA282EAD8

# TensorFlow DataType enum -> numpy little-endian dtype (numeric types only).
TF_DTYPES: dict[int, str] = {
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
    14: "<u2", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8",
}  # fmt: skip


class CheckpointError(Exception):
    """The checkpoint is missing, truncated or not a TensorFlow tensor bundle."""


def masked_crc32c(data: bytes) -> int:
    """LevelDB/TensorFlow store crc32c rotated and offset so a crc of a crc is not trivial."""
    import crc32c  # the musicnn extra's: read to convert, never to start the host

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def read_checkpoint(index_path: Path) -> dict[str, np.ndarray]:
    """Return every numeric tensor of the checkpoint whose ``.index`` file is given.

    The data shards sit beside it: ``<base>.index`` goes with ``<base>.data-00000-of-00001``
    (the musicnn wheel saved with an empty base, so its files are ``.index`` and ``.data-...``).
    """
    index_path = Path(index_path)
    if not index_path.is_file():
        raise CheckpointError(f"Checkpoint index {index_path} does not exist.")
    index_bytes = index_path.read_bytes()
    entries = dict(_iterate_table(index_bytes, index_path))
    if b"" not in entries:
        raise CheckpointError(f"Checkpoint index {index_path} has no bundle header entry.")
    num_shards, endianness = _parse_bundle_header(entries.pop(b""))
    if endianness != 0:
        raise CheckpointError(f"Checkpoint {index_path} is big-endian, which is not supported.")

    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for raw_name, raw_entry in entries.items():
        name = raw_name.decode("utf-8")
        entry = _parse_bundle_entry(raw_entry, index_path, name)
        dtype = TF_DTYPES.get(entry["dtype"])
        if dtype is None or entry["slices"]:
            continue  # strings / partitioned variables never occur in the musicnn checkpoints
        shard_id = entry["shard_id"]
        if shard_id not in shards:
            shards[shard_id] = _read_shard(index_path, shard_id, num_shards)
        shard = shards[shard_id]
        start, size = entry["offset"], entry["size"]
        raw = shard[start : start + size]
        if len(raw) != size:
            raise CheckpointError(
                f"Checkpoint data for {name!r} runs past the end of shard {shard_id} of "
                f"{index_path}; the .data file is truncated."
            )
        if entry["crc32c"] is not None and masked_crc32c(raw) != entry["crc32c"]:
            raise CheckpointError(
                f"Checkpoint data for {name!r} of {index_path} fails its checksum."
            )
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).copy()
    return tensors


def data_shard_path(index_path: Path, shard_id: int, num_shards: int) -> Path:
    """Where TensorFlow puts data shard ``shard_id`` of the checkpoint with this index."""
    base = index_path.name.removesuffix(".index")
    return index_path.with_name(f"{base}.data-{shard_id:05d}-of-{num_shards:05d}")


def _read_shard(index_path: Path, shard_id: int, num_shards: int) -> bytes:
    path = data_shard_path(index_path, shard_id, num_shards)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint data file {path} does not exist.")
    return path.read_bytes()


# --- SSTable ----------------------------------------------------------------------------------


def _iterate_table(table: bytes, path: Path):
    """Yield (key, value) of every entry in the table's data blocks, in key order."""
    if len(table) < FOOTER_SIZE:
        raise CheckpointError(f"Checkpoint index {path} is too short to be a table.")
    footer = table[-FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != TABLE_MAGIC:
        raise CheckpointError(f"Checkpoint index {path} has a bad magic number (not an index).")
    _metaindex_handle, position = _read_block_handle(footer, 0, path)
    index_handle, _ = _read_block_handle(footer, position, path)
    index_block = _read_block(table, index_handle, path)
    for _separator, handle_bytes in _iterate_block(index_block, path):
        data_handle, _ = _read_block_handle(handle_bytes, 0, path)
        yield from _iterate_block(_read_block(table, data_handle, path), path)


def _read_block_handle(buffer: bytes, position: int, path: Path) -> tuple[tuple[int, int], int]:
    offset, position = _read_varint(buffer, position, path)
    size, position = _read_varint(buffer, position, path)
    return (offset, size), position


def _read_block(table: bytes, handle: tuple[int, int], path: Path) -> bytes:
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table):
        raise CheckpointError(f"Checkpoint index {path} is truncated (a block runs past the end).")
    contents = table[offset:end]
    compression = table[end]
    stored_crc = struct.unpack("<I", table[end + 1 : end + 5])[0]
    if masked_crc32c(table[offset : end + 1]) != stored_crc:
        raise CheckpointError(f"Checkpoint index {path} is corrupt (block checksum mismatch).")
    if compression == NO_COMPRESSION:
        return contents
    if compression == SNAPPY_COMPRESSION:
        return snappy_decompress(contents, path)
    raise CheckpointError(f"Checkpoint index {path} uses unknown block compression {compression}.")


def _iterate_block(block: bytes, path: Path):
    """Yield (key, value) pairs; keys share a prefix with the previous key (prefix compression)."""
    if len(block) < 4:
        raise CheckpointError(f"Checkpoint index {path} has an empty block.")
    num_restarts = struct.unpack("<I", block[-4:])[0]
    entries_end = len(block) - 4 - 4 * num_restarts
    if entries_end < 0:
        raise CheckpointError(f"Checkpoint index {path} has a malformed block.")
    key = b""
    position = 0
    while position < entries_end:
        shared, position = _read_varint(block, position, path)
        non_shared, position = _read_varint(block, position, path)
        value_length, position = _read_varint(block, position, path)
        if shared > len(key) or position + non_shared + value_length > entries_end:
            raise CheckpointError(f"Checkpoint index {path} has a malformed block entry.")
        key = key[:shared] + block[position : position + non_shared]
        position += non_shared
        yield key, block[position : position + value_length]
        position += value_length


def snappy_decompress(compressed: bytes, path: Path | str = "<block>") -> bytes:
    """Decode a raw snappy block (TF writes indexes uncompressed, but the format allows it)."""
    expected_length, position = _read_varint(compressed, 0, path)
    output = bytearray()
    while position < len(compressed):
        tag = compressed[position]
        position += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(compressed[position : position + extra], "little")
                position += extra
            length += 1
            output += compressed[position : position + length]
            position += length
            continue
        if kind == 1:
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | compressed[position]
            position += 1
        else:
            width = 2 if kind == 2 else 4
            length = (tag >> 2) + 1
            offset = int.from_bytes(compressed[position : position + width], "little")
            position += width
        if offset == 0 or offset > len(output):
            raise CheckpointError(f"Checkpoint index {path} has a corrupt snappy block.")
        for _ in range(length):  # byte by byte: copies may overlap their own output
            output.append(output[-offset])
    if len(output) != expected_length:
        raise CheckpointError(f"Checkpoint index {path} has a truncated snappy block.")
    return bytes(output)


# --- protobuf (just the handful of fields a tensor bundle uses) -------------------------------


def _read_varint(buffer: bytes, position: int, path: Path | str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise CheckpointError(f"Checkpoint index {path} is truncated inside a number.")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _iterate_fields(message: bytes, path: Path | str):
    """Yield (field number, value): an int for varint/fixed fields, bytes for length-delimited."""
    position = 0
    while position < len(message):
        tag, position = _read_varint(message, position, path)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _read_varint(message, position, path)
        elif wire_type == 1:
            value = struct.unpack("<Q", message[position : position + 8])[0]
            position += 8
        elif wire_type == 2:
            length, position = _read_varint(message, position, path)
            value = message[position : position + length]
            position += length
        elif wire_type == 5:
            value = struct.unpack("<I", message[position : position + 4])[0]
            position += 4
        else:
            raise CheckpointError(f"Checkpoint index {path} holds an undecodable entry.")
        if position > len(message):
            raise CheckpointError(f"Checkpoint index {path} holds a truncated entry.")
        yield field, value


def _parse_bundle_header(message: bytes) -> tuple[int, int]:
    """BundleHeaderProto: num_shards = 1, endianness = 2 (0 little), version = 3."""
    fields = dict(_iterate_fields(message, "<header>"))
    return fields.get(1, 1), fields.get(2, 0)


def _parse_bundle_entry(message: bytes, path: Path, name: str) -> dict:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None,
             "slices": False}  # fmt: skip
    for field, value in _iterate_fields(message, path):
        if field == 1:
            entry["dtype"] = value
        elif field == 2:
            entry["shape"] = _parse_shape(value, path)
        elif field == 3:
            entry["shard_id"] = value
        elif field == 4:
            entry["offset"] = value
        elif field == 5:
            entry["size"] = value
        elif field == 6:
            entry["crc32c"] = value
        elif field == 7:
            entry["slices"] = True
    return entry


def _parse_shape(message: bytes, path: Path) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim dim = 2, where Dim.size = 1."""
    dims = []
    for field, value in _iterate_fields(message, path):
        if field == 2:
            dims.append(dict(_iterate_fields(value, path)).get(1, 0))
    return tuple(dims)
