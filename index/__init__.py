"""index: retrieval. Hamming bit-flip index, FAISS latent index, SQLite catalogue, the store.

Depends on hashae (never on cli).
"""
