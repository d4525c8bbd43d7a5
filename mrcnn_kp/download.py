"""Verified downloads into the package's cache, with the standard library only.

    path, digest = download("https://download.pytorch.org/models/x-fc266e95.pth",
                            cache_root() / "downloads" / "x-fc266e95.pth", sha256="fc266e95...")

The file is streamed to a temporary file beside its destination (`.part-*` in the same folder)
while its sha256 is computed; only when the whole body has arrived and the hash matches is it
renamed onto the destination in one step. A wrong hash, a connection that drops mid-file, an
HTTP error, a timeout or Ctrl-C removes the temporary file: the destination either holds the
complete, verified file or does not exist. `file://` URLs work too (mirrors on a shared disk,
tests). Errors are `DownloadError`s with a one-line message naming the file and the URL.

The cache root is $MRCNN_KP_CACHE, else ~/.cache/mrcnn_kp (the folder of the synthetic set).
"""
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0  # per blocking socket operation, not for the whole file
_PROGRESS_EVERY_S = 0.5


class DownloadError(RuntimeError):
    """A download that failed or was refused; nothing was kept."""


class HashMismatchError(DownloadError):
    """The downloaded bytes do not have the expected sha256; nothing was kept."""


def cache_root():
    """$MRCNN_KP_CACHE or ~/.cache/mrcnn_kp."""
    return Path(os.environ.get("MRCNN_KP_CACHE", Path.home() / ".cache" / "mrcnn_kp"))


def sha256_of(path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(actual, expected):
    """True when `actual` (64 hex digits) matches `expected`: a full sha256, or a prefix of at
    least 8 hex digits (the hash torchvision puts in its file names)."""
    expected = expected.strip().lower()
    return len(expected) >= 8 and actual.lower().startswith(expected)


def download(url, dest, sha256=None, progress=True, timeout=TIMEOUT_S):
    """Fetch `url` into `dest`; return (dest, hex sha256 of the bytes).

    sha256: the expected hash (64 hex digits, or a prefix of at least 8); None accepts any
        bytes (the caller decides whether an unverified file may be used). A mismatch raises
        HashMismatchError and keeps nothing.
    progress: a progress line on stderr (size, percentage when the server gives a length).
    """
    dest = Path(dest)
    name = dest.name
    if sha256 is not None and not _is_hex(sha256, min_length=8):
        raise DownloadError(f"{name}: expected sha256 {sha256!r} is not 8 to 64 hex digits")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".part-{name}-", dir=dest.parent)
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"cannot download {name} from {url}: HTTP {exc.code} "
                                    f"{exc.reason}") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError,
                    ValueError) as exc:
                raise DownloadError(f"cannot download {name} from {url}: "
                                    f"{_reason(exc)}") from None
            with response:
                total = _content_length(response)
                meter = _Progress(name, total) if progress else None
                try:
                    for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if meter is not None:
                            meter.update(received)
                except (http.client.HTTPException, OSError, ValueError) as exc:
                    # IncompleteRead (closed mid-file), connection reset, timeout
                    raise DownloadError(f"cannot download {name} from {url}: the transfer "
                                        f"stopped after {_size(received)}"
                                        f"{f' of {_size(total)}' if total else ''} "
                                        f"({_reason(exc)})") from None
                finally:
                    if meter is not None:
                        meter.close(received)
            if total is not None and received != total:
                raise DownloadError(f"cannot download {name} from {url}: received "
                                    f"{_size(received)} of {_size(total)}")
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if sha256 is not None and not check_sha256(actual, sha256):
            raise HashMismatchError(
                f"{name} from {url} has sha256 {actual}, expected {sha256.lower()}: refused, "
                f"nothing was kept")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have made
        os.replace(tmp, dest)
        return dest, actual
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------ helpers
def _is_hex(text, min_length):
    text = str(text).strip()
    return min_length <= len(text) <= 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _content_length(response):
    value = response.headers.get("Content-Length") if response.headers else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reason(exc):
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__


def _size(n):
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


class _Progress:
    """`downloading NAME: 12.3 / 226.0 MB (5 %)` on stderr, rewritten in place on a terminal,
    a line per 10 % otherwise."""

    def __init__(self, name, total):
        self.name, self.total = name, total
        self.tty = sys.stderr.isatty()
        self.last_time, self.last_tenth = 0.0, -1

    def _line(self, received):
        if self.total:
            return (f"downloading {self.name}: {received / 1e6:.1f} / {self.total / 1e6:.1f} MB "
                    f"({100 * received // self.total} %)")
        return f"downloading {self.name}: {received / 1e6:.1f} MB"

    def update(self, received):
        now = time.monotonic()
        if self.tty:
            if now - self.last_time >= _PROGRESS_EVERY_S:
                self.last_time = now
                print("\r" + self._line(received), end="", file=sys.stderr, flush=True)
        elif self.total:
            tenth = 10 * received // self.total
            if tenth > self.last_tenth:
                self.last_tenth = tenth
                print(self._line(received), file=sys.stderr, flush=True)

    def close(self, received):
        if self.tty:
            print("\r" + self._line(received), file=sys.stderr, flush=True)
        elif not self.total:
            print(self._line(received), file=sys.stderr, flush=True)
