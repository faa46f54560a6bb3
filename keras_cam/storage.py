"""Atomic writes: a crash or a full disk never leaves a half-written file as the latest.

Run files, checkpoints and exports are written under a temporary name in the target's
folder, flushed to disk, then renamed over the target (``os.replace``, atomic on
POSIX). If anything fails the temporary is removed and the previous file (or folder)
is left exactly as it was, so ``--resume`` and TF Serving only ever see complete files.
"""

import errno
import os
import secrets
import shutil

import tensorflow as tf

from keras_cam import data


class WriteError(OSError):
    """A file or folder could not be written (disk full, read-only, ...).

    The message names the target and says that the previous version is intact;
    ``errno`` is the underlying error number when there is one.
    """

    def __init__(self, message, error_number=None):
        super().__init__(message)
        self.errno = error_number


def _reason(error):
    if getattr(error, "errno", None):
        return os.strerror(error.errno)
    # TF's file errors read "<temporary path>; <strerror>"
    return data.error_reason(error).rsplit("; ", 1)[-1]


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path):
    if os.path.isdir(path):
        for folder, _, files in os.walk(path):
            for name in files:
                _fsync(os.path.join(folder, name))
            _fsync(folder)
    else:
        _fsync(path)


def replace_atomically(target, write, folder=False):
    """Writes ``target`` by calling ``write(temporary_path)`` and renaming the result.

    Args:
        target: the file or folder to (re)place.
        write: callable that writes a complete file (or folder) at the path given;
            the path ends with the target's own suffix (Keras checks suffixes).
        folder: True when ``write`` makes a folder (a SavedModel).

    Returns:
        ``target``.

    Raises:
        WriteError: writing or renaming failed; ``target`` is as it was.
    """
    target = os.fspath(target)
    parent = os.path.dirname(os.path.abspath(target))
    name = os.path.basename(target)
    suffix = "" if folder else name[name.find("."):] if "." in name else ""
    # Not tempfile.mkstemp/mkdtemp: their 0600/0700 modes would survive the rename and
    # lock out readers such as a TF Serving container running as another user.
    tmp = os.path.join(parent, f".tmp-{name}-{secrets.token_hex(6)}{suffix}")
    try:
        os.makedirs(parent, exist_ok=True)
        if folder:
            os.mkdir(tmp)
        write(tmp)
        _fsync_tree(tmp)  # the data must be on disk before the rename makes it the latest
        os.replace(tmp, target)
        tmp = None
    except (OSError, tf.errors.OpError) as error:
        raise WriteError(f"Could not write {target!r}: {_reason(error)}. Nothing was replaced: "
                         f"the previous version (if any) is intact.",
                         getattr(error, "errno", None) or errno.EIO) from error
    finally:
        if tmp is not None:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.lexists(tmp):
                os.remove(tmp)
    try:
        _fsync(parent)  # makes the rename itself durable; not every filesystem allows it
    except OSError:
        pass
    return target


def write_text(path, text):
    """Writes a small text file atomically (UTF-8; a non-UTF-8 file name in the text
    is written as its original bytes)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    return replace_atomically(path, write)


def save_model(model, path):
    """Saves a Keras model (``.keras`` or ``.weights.h5``) atomically."""
    save = model.save_weights if os.fspath(path).endswith(".weights.h5") else model.save
    return replace_atomically(path, save)


def remove_temporaries(folder):
    """Removes what an interrupted ``replace_atomically`` left in ``folder``."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(".tmp-"):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def version_numbers(base, complete=False):
    """The integer version folders of a model base path (TF Serving's layout), ascending.

    Args:
        base: ``saved_models/NAME``; a missing folder has no versions.
        complete: only versions holding a ``saved_model.pb``.

    Returns:
        list of int.
    """
    if not os.path.isdir(base):
        return []
    return sorted(int(d) for d in os.listdir(base)
                  if d.isascii() and d.isdigit()
                  and (not complete or os.path.isfile(os.path.join(base, d, "saved_model.pb"))))
