"""Reading the refer datasets' refs pickles without running code from them (docs/method.md section 5).

A refs(<splitBy>).p file is a list of dicts of str / int / float / lists (the original RefCOCO files are
Python-2 pickles, protocol 2). A full ``pickle.load`` would run whatever a crafted file asks for (a
``__reduce__`` naming ``os.system`` or ``builtins.open``), so these files are read with an unpickler that
refuses every global.

Why no global is admitted: the pickle opcodes for plain containers and scalars build their objects
directly, with no class lookup: dict (EMPTY_DICT, DICT, SETITEMS), list (EMPTY_LIST, LIST, APPENDS), tuple
(TUPLE*), str (BINUNICODE*, and Python 2's str via SHORT_BINSTRING / BINSTRING, decoded with ``encoding``),
bytes (BINBYTES*, protocol 3+), int (BININT*, LONG1), float (BINFLOAT), bool (NEWTRUE / NEWFALSE) and None.
Only objects built by a call need ``find_class``: Python 2's ``copy_reg._reconstructor`` (protocol 0/1
class instances), ``__builtin__.set``, and Python 3's ``_codecs.encode`` (bytes at protocol <= 2). A refs
file holds none of these, so the minimal safe set is empty and every global is refused.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global (a class or function): it is not plain data, and nothing was run."""


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and scalars and refuses every global by name."""

    def find_class(self, module: str, name: str):
        # Raising here, before the global is looked up, means no callable from the file is ever reached.
        raise UnsafePickleError(f"{module}.{name}")

    def persistent_load(self, pid):
        # Persistent ids are a hook into the reading program; a data file has no business using one.
        raise UnsafePickleError(f"persistent id {str(pid)[:40]!r}")


def loads_plain(data: bytes, encoding: str = "ASCII"):
    """Unpickle ``data`` holding plain containers and scalars only.

    ``encoding`` decodes Python 2 str (8-bit) values, as in ``pickle.loads``.

    Raises:
        UnsafePickleError naming the refused global (``module.name``); the other ``pickle.loads`` errors
        for a damaged stream.
    """
    return PlainDataUnpickler(io.BytesIO(data), encoding=encoding).load()


def load_plain_pickle(path: Path | str, what: str = "refs pickle"):
    """Read a pickle file of plain data (a refs file); errors name the file.

    Python 2 str values are read as str: ASCII first, and on a UnicodeDecodeError (non-ASCII bytes, as in
    the original refer files) again with latin1, which maps every byte to one character.

    Raises:
        ValueError naming the file: the global it asks for ("not a plain refs pickle", nothing was run),
        or the damage for a corrupt file.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        try:
            return loads_plain(data)
        except UnicodeDecodeError:
            return loads_plain(data, encoding="latin1")
    except UnsafePickleError as exc:
        raise ValueError(f"{path} is not a plain {what}: it asks for the global {exc}, which a file of lists "
                         "and dicts of str/int/float never needs, so it was refused and nothing in it was run; "
                         "re-download or regenerate the file, and do not load it with pickle") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError) as exc:
        raise ValueError(f"corrupt {what} {path}: {type(exc).__name__}: {exc}; re-download or "
                         "regenerate the file") from exc
