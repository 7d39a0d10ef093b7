"""The local store backend: FAISS + multi-index hashing index files over an SQLite catalogue.

Only hashae.index.backends (open_store) and the tests import these modules:

    store.py            LocalStore: opens a store folder, hands out the writer and read views
    writer.py           LocalWriteTransaction: pending changes and the crash-safe commit
    snapshot.py         LocalSnapshot: the read view of one committed generation
    catalogue.py        the SQLite catalogue: items, skipped files, models, generations, settings
    files.py            index files: publish (temp + fsync + rename), load and verify, rebuild
    hamming.py          HammingIndex: exact Hamming k-NN and range (multi-index hashing)
    _mih_kernels.py     its compiled probing kernels (numba), loaded on first probe
    latent.py           LatentIndex: FAISS over the VAE latents
    layout.py           where each file of the store folder lives
    (the one-writer lock is index/backends/lock.py, shared with the Milvus backend)
    names.py            file names that are not UTF-8, stored losslessly
    stored_settings.py  settings documents, older ones included
"""
