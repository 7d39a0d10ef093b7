"""One Milvus collection of a store's items: its schema, and the calls the store makes on it.

    id            INT64 primary key (hashae's own ids, reserved in the catalogue first)
    code          BINARY_VECTOR, dim = bits; HAMMING; BIN_FLAT (exact) or BIN_IVF_FLAT (servers)
    latent        FLOAT_VECTOR, dim = latent_dim; L2 (Milvus reports it squared); FLAT (exact)
    path, label, content_hash, added_at   VARCHAR (names.py: lossless for any file name)
    size, mtime_ns                        INT64
    added_gen     the generation that adds the row
    removed_gen   the generation that drops it; NOT_REMOVED while live

A row is visible in generation G when added_gen <= G < removed_gen (visible_at): readers of G never
see rows a writer adds or drops for G + 1. Collections are made with Strong consistency, so a
search sees every write made before it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hashae.index.backends.base import StoreError
from hashae.index.backends.milvus.connection import import_pymilvus, milvus_errors

NOT_REMOVED = 2**62  # removed_gen of a live row
MAX_TOPK = 16_384  # Milvus: limit (+ offset) of one search or query is at most this
INSERT_BATCH = 2_000  # rows per insert or upsert call
FETCH_BATCH = 1_000  # ids per "id in [...]" query
# ids per query when reading every row: a window of at most MAX_TOPK ids holds at most MAX_TOPK rows,
# so one query with limit=MAX_TOPK returns all of them (without a limit Milvus Lite stops at 16,383)
ID_WINDOW = MAX_TOPK
PATH_BYTES = 8_192  # base64 of a 4096-byte path, with room
LABEL_BYTES = 1_024
HASH_BYTES = 256
STAMP_BYTES = 64
ROW_FIELDS = ("id", "code", "latent", "path", "label", "size", "mtime_ns", "content_hash", "added_gen", "removed_gen", "added_at")
INFO_FIELDS = ("id", "path", "label", "size", "mtime_ns", "content_hash", "added_gen", "removed_gen", "added_at")
LIVE = f"removed_gen == {NOT_REMOVED}"
HAMMING_INDEXES = ("BIN_FLAT", "BIN_IVF_FLAT")
LOAD_TIMEOUT_S = 120.0
LOAD_POLL_S = 0.02


def visible_at(gen: int) -> str:
    """The filter of the rows generation gen shows."""
    return f"(added_gen <= {int(gen)} and removed_gen > {int(gen)})"


def id_window(start: int, stop: int) -> str:
    return f"(id >= {int(start)} and id < {int(stop)})"


def ids_in(ids: Sequence[int]) -> str:
    return f"(id in [{', '.join(str(int(i)) for i in ids)}])"


@dataclass(frozen=True)
class Metric:
    """How one vector field is searched: its Milvus metric, request format and distance type."""

    field: str
    name: str  # Milvus metric_type
    integer: bool  # Hamming distances are whole bits

    def request(self, vectors: np.ndarray) -> list:
        """Query vectors as pymilvus takes them: bytes per packed code, a float list per latent."""
        return [row.tobytes() for row in vectors] if self.integer else [row.tolist() for row in vectors]

    def distance(self, value: float) -> int | float:
        return int(round(value)) if self.integer else float(value)

    def range_params(self, low: float, high_exclusive: float) -> dict[str, Any]:
        """Search params of a range search: low <= distance < high_exclusive."""
        return {"radius": high_exclusive, "range_filter": low}

    def shell(self, distance: int | float) -> tuple[float, float]:
        """(low, high_exclusive) holding exactly this distance."""
        if self.integer:
            return float(distance), float(distance) + 1.0
        upper = np.nextafter(np.float32(distance), np.float32(np.inf))
        return float(distance), float(upper)


HAMMING = Metric("code", "HAMMING", integer=True)
SQUARED_L2 = Metric("latent", "L2", integer=False)


class ItemsCollection:
    """The calls a Milvus store makes on one of its collections (errors become StoreError)."""

    def __init__(self, client: Any, name: str, *, search_params: dict[str, Any] | None = None):
        self.client = client
        self.name = name
        self.search_params = search_params or {}  # extra params of code searches (nprobe of BIN_IVF_FLAT)

    # --------------------------------------------------------------------------- make, drop
    @classmethod
    def create(cls, client: Any, name: str, *, bits: int, latent_dim: int, hamming_index: dict[str, Any]) -> ItemsCollection:
        """Make the collection (adopting one of this name left by a killed writer if its shape fits)."""
        collection = cls(client, name, search_params=search_params_of(hamming_index))
        if collection.exists():
            if collection.dims() != (bits, latent_dim):
                raise StoreError(f"the Milvus collection {name} exists with other vector sizes; use another store")
            return collection
        DataType = import_pymilvus().DataType
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=bits)
        schema.add_field("latent", DataType.FLOAT_VECTOR, dim=latent_dim)
        schema.add_field("path", DataType.VARCHAR, max_length=PATH_BYTES)
        schema.add_field("label", DataType.VARCHAR, max_length=LABEL_BYTES)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime_ns", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=HASH_BYTES)
        schema.add_field("added_gen", DataType.INT64)
        schema.add_field("removed_gen", DataType.INT64)
        schema.add_field("added_at", DataType.VARCHAR, max_length=STAMP_BYTES)
        index_params = client.prepare_index_params()
        kind = hamming_index["type"]
        index_params.add_index("code", index_type=kind, metric_type="HAMMING", params=index_build_params(hamming_index))
        index_params.add_index("latent", index_type="FLAT", metric_type="L2")
        with milvus_errors(f"create the collection {name} ({kind} index on the codes)"):
            client.create_collection(name, schema=schema, consistency_level="Strong")
            # pymilvus waits for an index in steps of 0.5 s and for loading in steps of 0.2 s; an
            # empty collection needs neither long, so ask without waiting and poll quickly.
            client.create_index(name, index_params, sync=False)
            client.load_collection(name, _async=True)
        collection.wait_until_loaded()
        return collection

    def wait_until_loaded(self, *, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Wait until Milvus has loaded the collection (searches and queries need it)."""
        deadline = time.monotonic() + timeout
        while True:
            with milvus_errors(f"load the collection {self.name}"):
                state = self.client.get_load_state(self.name)["state"]
            if getattr(state, "name", str(state)) == "Loaded":
                return
            if time.monotonic() > deadline:
                raise StoreError(f"Milvus did not load the collection {self.name} within {timeout:.0f} s; try again")
            time.sleep(LOAD_POLL_S)

    def exists(self) -> bool:
        with milvus_errors(f"look up the collection {self.name}"):
            return bool(self.client.has_collection(self.name))

    def dims(self) -> tuple[int, int]:
        """(bits, latent_dim) the collection was made with."""
        with milvus_errors(f"describe the collection {self.name}"):
            fields = {f["name"]: f for f in self.client.describe_collection(self.name)["fields"]}
        return int(fields["code"]["params"]["dim"]), int(fields["latent"]["params"]["dim"])

    def drop(self) -> None:
        with milvus_errors(f"drop the collection {self.name}"):
            self.client.drop_collection(self.name)

    def flush(self) -> None:
        """Make every write so far durable (sealed segments on a server; a no-op on Lite)."""
        with milvus_errors(f"flush the collection {self.name}"):
            self.client.flush(self.name)

    # -------------------------------------------------------------------------------- writes
    def insert(self, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), INSERT_BATCH):
            with milvus_errors(f"insert items into {self.name}"):
                self.client.insert(self.name, rows[start : start + INSERT_BATCH])

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        """Write whole rows over those with the same ids (one request per batch)."""
        for start in range(0, len(rows), INSERT_BATCH):
            with milvus_errors(f"update items in {self.name}"):
                self.client.upsert(self.name, rows[start : start + INSERT_BATCH])

    def delete_where(self, where: str) -> None:
        with milvus_errors(f"delete items from {self.name}"):
            self.client.delete(self.name, filter=where)

    # --------------------------------------------------------------------------------- reads
    def count(self, where: str) -> int:
        with milvus_errors(f"count items in {self.name}"):
            result = self.client.query(self.name, filter=where, output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def rows_by_ids(self, ids: Sequence[int], *, where: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        """Rows with these ids that also match where (unknown ids are absent), in no order."""
        found: list[dict[str, Any]] = []
        unique = sorted({int(i) for i in ids})
        for start in range(0, len(unique), FETCH_BATCH):
            chunk = unique[start : start + FETCH_BATCH]
            with milvus_errors(f"fetch items from {self.name}"):
                found += self.client.query(
                    self.name, filter=f"{ids_in(chunk)} and {where}", output_fields=list(fields), limit=len(chunk)
                )
        return found

    def rows_where(self, where: str, *, fields: Sequence[str], id_end: int) -> Iterator[dict[str, Any]]:
        """Every row matching where, by windows of ids below id_end (each query bounded)."""
        window = min(ID_WINDOW, MAX_TOPK)
        for start in range(0, id_end, window):
            with milvus_errors(f"read items from {self.name}"):
                rows = self.client.query(
                    self.name, filter=f"{id_window(start, start + window)} and {where}", output_fields=list(fields),
                    limit=MAX_TOPK,
                )
            yield from rows

    def search(
        self, vectors: np.ndarray, *, metric: Metric, limit: int, where: str, within: tuple[float, float] | None = None
    ) -> list[list[tuple[int | float, int]]]:
        """Raw search: per query, up to limit (distance, id) pairs matching where, in Milvus's order.

        within=(low, high): only distances low <= d < high (a range search)."""
        params: dict[str, Any] = dict(self.search_params) if metric is HAMMING else {}
        if within is not None:
            params.update(metric.range_params(*within))
        with milvus_errors(f"search {self.name}"):
            found = self.client.search(
                self.name, data=metric.request(vectors), anns_field=metric.field, limit=int(limit), filter=where,
                search_params={"metric_type": metric.name, "params": params}, output_fields=[],
            )
        return [[(metric.distance(hit["distance"]), int(hit["id"])) for hit in hits] for hits in found]


def search_params_of(hamming_index: dict[str, Any]) -> dict[str, Any]:
    """Search params of the Hamming index (nprobe for BIN_IVF_FLAT)."""
    return {"nprobe": int(hamming_index["nprobe"])} if hamming_index["type"] == "BIN_IVF_FLAT" else {}


def index_build_params(hamming_index: dict[str, Any]) -> dict[str, Any]:
    return {"nlist": int(hamming_index["nlist"])} if hamming_index["type"] == "BIN_IVF_FLAT" else {}
