"""The Milvus store backend: items, codes and latents in Milvus; the rest in a small local catalogue.

    store.py       MilvusStore (StoreBackend): open, writer(), snapshot(), info()
    writer.py      MilvusWriteTransaction: rows tagged with their generation; the commit
    snapshot.py    MilvusSnapshot (ReadView): one committed generation, through a filter
    exact.py       k-NN and range searches equal to brute force, ties by id
    collection.py  the collection's schema and the Milvus calls
    catalogue.py   the SQLite catalogue: settings, models, skipped files, generations, collections
    connection.py  pymilvus client for a Milvus Lite file or a server; errors as StoreError
    names.py       file names as Milvus VARCHAR, losslessly

The store folder:

    milvus-catalogue.db   SQLite (WAL): see catalogue.py; a generation is committed once its row is here
    milvus.db             the Milvus Lite file, when the store was made without a URI
    milvus-logs/          the Lite server's glog files (errors only)
    write.lock            flock'ed by the one writer; holds its pid
    models/               checkpoint folders recorded in the catalogue

The same code serves Milvus Lite (2.5.1, the last build with binary vectors: BIN_FLAT only, one
process per file) and a Milvus server or cluster (a URI and a token; BIN_IVF_FLAT offered there).

Crash safety (a kill -9 of the writer at any instant)
-----------------------------------------------------
Milvus has no transaction over several calls. Every row carries the generation that adds it and the
one that drops it; readers of generation G filter added_gen <= G < removed_gen; the commit point of
G + 1 is one SQLite transaction in the local catalogue, made after the collection is flushed.

Cannot be lost: every committed generation, whole (its rows are neither added nor dropped by later
writers until the commit of G + 2 purges what G + 2 and G + 1 no longer show); settings, models,
skipped files and generations (SQLite, synchronous=FULL); ids (reserved durably before a row is
written, never given twice, so a retried insert never makes two rows with one primary key).

Can be lost: the work of the killed run that was not yet committed, in part. Rows it inserted are
kept as pending rows (added_gen = G + 1) and adopted by the next writer, which lists them in
live_items and so does not encode those files again; rows whose insert had not returned may be
absent and are encoded again. Rows it had marked removed stay marked; rows it had not are still
live, and the re-run removes them. Ids reserved but never written leave gaps. New mtimes of touched
files (update_mtimes) are written in place and seen at once, by readers too, as in the local store;
those written before the kill stay. A killed writer's Milvus Lite server exits by itself; the next
process to open the file waits for it (two servers never share a file).

Assumed, not proven: the kill hits the client, and Milvus applies a request it received whole (one
insert or upsert batch); on a server, unflushed data is as durable as its write-ahead log (the
commit flushes first). Not covered: a Milvus server that loses acknowledged writes, or an upsert
applied half (its delete without its insert) by a server crash: such a row would be missing from the
generations that showed it, and the next run would add the file again.

So a re-run converges: it sees exactly the files already stored (pending or committed), removes
and adds the rest, and commits the same visible contents (paths, metadata, codes, latents) as an
uninterrupted run; only the ids may differ (tests/test_milvus_backend.py kills a writer with SIGKILL
at several points and compares).
"""

from hashae.index.backends.milvus.store import CATALOGUE_FILE, LITE_FILE, MilvusStore, is_milvus_store

__all__ = ["CATALOGUE_FILE", "LITE_FILE", "MilvusStore", "is_milvus_store"]
