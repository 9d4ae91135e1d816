"""Decompressed bytes of a dump file: whole files, and ranges of bz2 streams read on their own.

A multistream dump (`*-pages-articles-multistream*.xml.bz2`) is many independent bz2 streams
laid end to end. A reader given a byte range reads every stream that *starts* in it, each to its
end wherever that is; a range that does not start on a stream boundary is scanned for the first
stream start (the bz2 stream magic `BZh1-9` followed by a block or end-of-stream magic).
A truncated or corrupt stream raises `InputError` naming the file and byte offset; nothing
waits on input that will never come.
"""

from __future__ import annotations

import bz2
import re
from typing import Iterator

from witcurate.errors import InputError
from witcurate.pipeline import fs

CHUNK = 1 << 20                       # compressed bytes read at a time

# A bz2 stream starts with "BZh" + block size digit, then either a block header (pi) or, for an
# empty stream, the end-of-stream marker (sqrt(pi)). Both are byte-aligned at a stream start.
STREAM_MAGIC = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
_MAGIC_LEN = 10


def compression_of(path: str) -> str:
    lower = path.lower()
    for suffix, name in ((".bz2", "bz2"), (".gz", "gzip"), (".xz", "xz")):
        if lower.endswith(suffix):
            return name
    return "none"


def bz2_chunks(path: str, start: int, end: int | None, locate: bool) -> Iterator[bytes]:
    """Decompressed bytes of the bz2 streams starting in [start, end), each read to its end."""
    with fs.open_file(path) as f:
        if locate:
            first = find_stream_start(f, start, end)
            if first is None:
                return
            start = first
        f.seek(start)
        pos = start                    # offset of the next byte to read
        stream_start = start
        dec = bz2.BZ2Decompressor()
        fed = False
        pending = b""                  # the first bytes of a stream, too few to check its magic
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            pos += len(chunk)
            data = pending + chunk if pending else chunk
            pending = b""
            while data:
                if not fed:
                    if len(data) < 4:
                        pending = data
                        break
                    if not data.startswith(b"BZh"):
                        raise InputError(
                            f"{path}: no bz2 stream starts at byte {stream_start} (found "
                            f"{data[:4]!r}): the file is corrupt, or the index does not belong to it",
                            "re-download the dump (and its -index file) and check their checksums")
                fed = True
                try:
                    out = dec.decompress(data)
                except (OSError, ValueError) as e:
                    raise InputError(
                        f"{path}: corrupt bz2 data in the stream starting at byte {stream_start}: {e}",
                        "re-download the dump and check its checksum") from None
                if out:
                    yield out
                if dec.eof:
                    data = dec.unused_data
                    stream_end = pos - len(data)
                    if end is not None and stream_end >= end:
                        return
                    dec = bz2.BZ2Decompressor()
                    stream_start = stream_end
                    fed = False
                else:
                    data = b""
        if pending:
            raise InputError(f"{path}: {len(pending)} stray bytes after the bz2 stream ending at "
                             f"byte {stream_start}", "re-download the dump and check its checksum")
        if fed and not dec.eof:
            raise InputError(
                f"{path}: truncated bz2 stream starting at byte {stream_start} "
                f"(the file ends at byte {pos} before the stream does)",
                "the download was cut short: re-download the dump and check its checksum")


def find_stream_start(f, start: int, end: int | None) -> int | None:
    """The first bz2 stream start at or after `start` and before `end`, by scanning bytes."""
    f.seek(start)
    pos = start
    tail = b""
    while end is None or pos < end + _MAGIC_LEN:      # a magic may straddle `end`
        chunk = f.read(CHUNK)
        if not chunk:
            break
        buf = tail + chunk
        base = pos - len(tail)
        m = STREAM_MAGIC.search(buf)
        if m:
            found = base + m.start()
            return found if end is None or found < end else None
        tail = buf[-(_MAGIC_LEN - 1):]
        pos += len(chunk)
    return None


def plain_chunks(path: str) -> Iterator[bytes]:
    comp = compression_of(path)
    try:
        with fs.open_file(path, "rb", compression=None if comp == "none" else comp) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    return
                yield chunk
    except (EOFError, OSError) as e:
        raise InputError(f"{path}: cannot decompress: {e}",
                         "re-download the dump and check its checksum") from None


def iter_stream_offsets(path: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every bz2 stream in a file, found by decompressing it (for checks)."""
    with fs.open_file(path) as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        dec = bz2.BZ2Decompressor()
        try:
            dec.decompress(data[pos:])
        except OSError as e:
            raise InputError(f"{path}: corrupt bz2 data at byte {pos}: {e}", "re-download it") from None
        if not dec.eof:
            raise InputError(f"{path}: truncated bz2 stream at byte {pos}", "re-download it")
        end = len(data) - len(dec.unused_data)
        yield pos, end
        pos = end

