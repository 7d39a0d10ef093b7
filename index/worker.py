"""Imported first by the server process that forks executor workers (index/executors.py).

Workers run one task at a time each, so each gets one BLAS / OpenMP thread (set here, before numpy
is imported); then the reader and the encoder stage are imported and the PNG kernel loaded once,
so that every forked worker starts ready. torch is never imported here.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import hashae.index.encoder  # noqa: E402,F401  (the reader, the decoders and the encoder stage)
from hashae.fastpng import warm_up  # noqa: E402

warm_up()
