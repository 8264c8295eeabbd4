"""Pin a benchmark to one thread and keep Hugging Face offline.

Call :func:`pin_to_one_thread` before torch (or anything that loads a BLAS) is imported: the
numeric libraries read these variables once, when they load. A module without imports of its own,
found because a script's folder is on ``sys.path``.
"""

import os


def pin_to_one_thread() -> None:
    """One thread for OpenMP, MKL, OpenBLAS and the tokenizers; the hub offline unless told otherwise."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
