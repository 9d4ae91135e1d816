"""The file helpers every stage writes through."""

import json
import threading

from witcurate.pipeline import fs


def test_a_json_file_being_rewritten_is_never_read_half_written(tmp_path):
    # Shard and stage markers are polled by other processes while they are written; a reader
    # must see the old document or the new one, never an empty or truncated file.
    path = str(tmp_path / "DONE.json")
    docs = [{"attempt": f"attempt-{i:04d}", "rows": list(range(2000 + i))} for i in range(200)]
    fs.write_json(path, docs[0])
    seen, bad, stop = set(), [], threading.Event()

    def read_until_stopped():
        while not stop.is_set():
            text = open(path, encoding="utf-8").read()
            try:
                seen.add(json.loads(text)["attempt"])
            except ValueError:
                bad.append(len(text))

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        for doc in docs:
            fs.write_json(path, doc)
    finally:
        stop.set()
        reader.join()
    assert bad == [], f"{len(bad)} reads saw a partial file (lengths {bad[:5]})"
    assert fs.read_json(path) == docs[-1]
    assert len(seen) > 1                                   # the reader did overlap the writes
    assert [p.name for p in tmp_path.iterdir()] == ["DONE.json"]   # no temporary file left
