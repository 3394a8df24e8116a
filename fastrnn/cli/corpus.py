"""Opening the corpus a command trains on or scores: prepared once to a memory-mapped id file, and no cache
folder left behind by bad input."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..corpus import CorpusError, load_corpus


def cache_writable(folder: Path) -> bool:
    if folder.exists():
        return folder.is_dir() and os.access(folder, os.W_OK)
    return os.access(folder.parent, os.W_OK)


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


class CreatedFolders:
    """The folders up to ``folder`` that do not exist yet; :meth:`remove` removes, where they were created
    since, the ``files`` this process wrote into them and then the folders themselves, deepest first, each
    only while empty: never a folder another process (a concurrent prepare) has put something in."""

    def __init__(self, folder: Path):
        self.created = missing_folders(folder)

    def remove(self, files=()):
        if self.created:
            for file in files:
                with contextlib.suppress(OSError):
                    os.unlink(file)
            for folder in self.created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only while empty
            self.created.clear()


@contextlib.contextmanager
def opened_corpus(path, bytes_mode, cache_dir=None):
    """The corpus to train on or evaluate, for the ``with`` block that checks the command's input.

    A file is prepared (:func:`~fastrnn.prepared.prepare_corpus`: encoded once to
    ``CORPUS.fastrnn-ids/`` beside it, or under ``cache_dir`` (``--cache-dir``),
    reused while unchanged) and read through a memory map; ``None`` is the
    embedded corpus, loaded in memory. Where the ids cannot be cached beside the
    corpus (a read-only folder) the file is loaded in memory as before; a
    ``cache_dir`` that cannot hold them is an error, since it was asked for.
    Bad input writes nothing: the cache folders this call created are removed
    again if preparing fails or the ``with`` block raises.
    """
    if path is None:
        yield load_corpus(None, bytes_mode=bytes_mode)
        return
    from ..prepared import cache_folder, prepare_corpus

    folder = cache_folder(path, cache_dir)
    remove_created = CreatedFolders(folder).remove  # with cache_dir, possibly cache_dir and its parents too
    written = ()  # the files this call's prepare wrote (none when it reused a cache)
    try:
        try:
            corpus = prepare_corpus(path, bytes_mode=bytes_mode, cache_dir=cache_dir)
            corpus.path = os.path.abspath(path)  # where it is now, even if it moved with its cache
            if not getattr(corpus, "reused", True):
                written = (corpus.ids_path, corpus.meta_path)
        except CorpusError:
            remove_created()
            if cache_dir is not None or cache_writable(folder):
                raise
            corpus = load_corpus(path, bytes_mode=bytes_mode)  # its errors are those of the file itself
        yield corpus
    except BaseException:
        remove_created(written)
        raise
