"""Read a PyTorch state_dict (.pth / .pt) into numpy arrays without torch and without running
pickled code.

A .pth file is a pickle whose tensors point at raw storage bytes. `pickle.load` would import and
call whatever the file names, so a malicious file could run code. This reader uses a restricted
Unpickler that only knows the handful of names a state_dict needs (OrderedDict, the tensor
rebuild functions, the typed storages) and refuses everything else, exactly like
`torch.load(weights_only=True)`. Both of torch's formats are understood:

- the zip format (torch >= 1.6): `archive/data.pkl` + `archive/data/<key>` raw storages;
- the legacy format (torch < 1.6): five pickles in a row, then the storages, each prefixed with
  its element count. The three header pickles (magic number, protocol, sys_info) are read by
  an unpickler that allows no global name at all, the state_dict and key list by the
  restricted one: no byte of the file reaches a plain `pickle.load`.

    state = read_state_dict("efficientnet-lite0-57934424.pth")   # {name: np.ndarray}
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # handled by hand: numpy has no bfloat16
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a Python object that a plain state_dict never contains."""


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage:
    """Raw bytes of one torch storage, decoded lazily into a flat numpy array."""

    def __init__(self, storage_type, numel):
        self.storage_type = storage_type
        self.numel = numel
        self.array = None

    def set_bytes(self, raw):
        name = self.storage_type.name
        if name == "BFloat16Storage":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            self.array = bits.view(np.float32)
        else:
            self.array = np.frombuffer(raw, dtype=np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<"))


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self):
        flat = self.storage.array
        if flat is None:
            raise pickle.UnpicklingError("a tensor refers to storage data that is not in the file")
        itemsize = flat.dtype.itemsize
        if not self.size:
            return np.array(flat[self.offset])
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride])
        return np.array(view)  # copy: independent of the file buffer


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


class _NoGlobalsUnpickler(pickle.Unpickler):
    """For the legacy format's header pickles (magic number, protocol, sys_info): plain ints,
    strings and dicts, so no global name and no persistent id is allowed at all."""

    def find_class(self, module, name):
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: the header of a torch file holds only numbers "
            f"and strings, and loading other objects could run code from the file")

    def persistent_load(self, saved_id):
        raise UnsafePickleError(f"unexpected persistent id {saved_id!r:.80} in a torch file header")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages, legacy):
        super().__init__(file)
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: a state_dict holds only tensors, and loading other "
            f"objects could run code from the file")

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise UnsafePickleError(f"unexpected persistent id {saved_id!r:.80}")
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r:.80}")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type, numel)
        return self._storages[key]


def _materialise(obj):
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    return obj


def _read_zip(path):
    storages = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise pickle.UnpicklingError(f"{path}: a zip file without data.pkl is not a torch file")
        prefix = pkl[0][: -len("data.pkl")]
        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), storages, legacy=False).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.set_bytes(raw)
    return obj


def _read_legacy(path):
    storages = {}
    with open(path, "rb") as f:
        # Every pickle, the header's too, goes through a restricted unpickler: a plain
        # pickle.load of the magic number would run whatever the first pickle names.
        magic = _NoGlobalsUnpickler(f).load()
        if type(magic) is not int or magic != LEGACY_MAGIC:
            raise pickle.UnpicklingError(f"{path} is not a PyTorch file (bad magic number)")
        _protocol = _NoGlobalsUnpickler(f).load()
        sys_info = _NoGlobalsUnpickler(f).load()
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
            raise pickle.UnpicklingError(f"{path}: big-endian torch files are not supported")
        obj = _RestrictedUnpickler(f, storages, legacy=True).load()
        keys = _RestrictedUnpickler(f, storages, legacy=True).load()
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            itemsize = 2 if storage.storage_type.name == "BFloat16Storage" else \
                np.dtype(_STORAGE_DTYPES[storage.storage_type.name]).itemsize
            raw = f.read(numel * itemsize)
            if len(raw) != numel * itemsize:
                raise pickle.UnpicklingError(f"{path} is truncated (storage {key})")
            storage.set_bytes(raw)
    return obj


def read_state_dict(path):
    """{parameter name: np.ndarray} from a torch .pth/.pt state_dict, executing no pickled code.

    A checkpoint dict wrapping the weights under "state_dict" or "model" is unwrapped.
    """
    path = str(path)
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (EOFError, struct.error) as exc:
        raise pickle.UnpicklingError(f"{path} is truncated or not a PyTorch file: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{path} does not hold a state_dict (found {type(obj).__name__})")
    return _materialise(obj)
