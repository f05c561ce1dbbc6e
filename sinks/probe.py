"""Log identity: an *anchor* names the record at a partition's first offset (its offset and a
digest of its key, value and timestamp). A restarted in-memory broker gives offset 0 to a different
record, so re-reading the anchor's offset tells an old log from a new one even when the new log
has already grown past the offsets stored in DuckDB."""

from __future__ import annotations

import hashlib
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError


def anchor_of(record: ConsumerRecord[bytes, bytes]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in (record.key or b"", record.value or b"", str(record.timestamp).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return f"{record.offset}:{h.hexdigest()}"


def anchor_offset(anchor: str) -> int:
    return int(anchor.split(":", 1)[0])


async def probe_anchors(probe: AIOKafkaConsumer, wanted: dict[TopicPartition, str],
                        timeout: float = 3.0) -> dict[TopicPartition, str]:
    """Re-read the anchor record of each partition in ``wanted`` with the (group-less) ``probe``
    consumer; returns {partition: reason} for the logs that are not the anchored ones. A partition
    that answers nothing within ``timeout`` is left for the next probe.

    Log ends come from fetch responses (their high watermark), not from ListOffsets: Tansu 0.6
    answers ListOffsets(latest) with the base offset of the last record batch + 1."""
    changed: dict[TopicPartition, str] = {}
    pending = {tp: (anchor_offset(anchor), anchor) for tp, anchor in wanted.items()}
    if not pending:
        return changed
    probe.assign(sorted(pending))
    for tp, (offset, _) in pending.items():
        probe.seek(tp, offset)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            try:
                data = await probe.getmany(*pending, timeout_ms=200)
            except OffsetOutOfRangeError as exc:
                for tp in exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}:
                    if pending.pop(tp, None) is not None:
                        changed[tp] = "anchor offset out of range"
                continue
            for tp, (offset, anchor) in list(pending.items()):
                first = next((r for r in data.get(tp, ()) if r.offset >= offset), None)
                high = probe.highwater(tp)
                if first is not None:
                    del pending[tp]
                    if first.offset == offset and anchor_of(first) != anchor:
                        changed[tp] = "a different record at the anchor offset"
                elif high is not None and high <= offset:
                    del pending[tp]
                    changed[tp] = f"log end {high} at or before the anchor offset {offset}"
    finally:
        probe.assign([])
    return changed
