"""A strict CPU stand-in for CuPy, written by this project for its tests (not a CuPy emulator for users).

It holds NumPy arrays behind a device-array type that behaves as CuPy's documented contract says, and
stricter where CuPy is lenient in ways that cost time on a GPU:

* implicit host conversion raises: `np.asarray(x)`, `np.array(x)` (CuPy: "Implicit conversion to a NumPy
  array is not allowed"), and a NumPy array mixed into a device operation raises TypeError, as CuPy does;
* only the dtypes CuPy 13 holds: bool, (u)int8-64, float16/32/64, complex64/128 -- an ml_dtypes bfloat16
  or float8 array cannot be moved to the "device", nor cast to there;
* every device-to-host synchronisation is counted with its call site: `bool()`, `int()`, `float()`,
  `item()`, `tolist()`, `get()`, `cupy.asnumpy`, printing, boolean-mask indexing and `nonzero` (their size
  is data-dependent), and every sort (`sort`, `argsort`, `partition`, `argpartition`; CuPy's are full
  thrust sorts, which synchronise before CuPy 14; `argpartition` fully sorts);
* `ufunc.at` for the ufuncs CuPy scatters (`add.at`, `maximum.at`, `minimum.at`: one launch, no
  synchronisation; any other `.at` raises NotImplementedError, as in CuPy), stricter on one point: an
  out-of-range index raises, where CuPy's kernel wraps it;
* kernel launches (every operation that computes or copies; views such as reshape and slicing are free),
  host-to-device and device-to-host bytes, and every float16 -> float32 widening (with the root array
  widened, so a test can ask whether a weight was widened).

A float16 @ float16 product is computed as cuBLAS does for half inputs (float32 accumulation, rounded once
to float16) and is *not* a widening: it is the device's own kernel.

Use: `standin = install()` puts this module in sys.modules["cupy"] (the tests' `cupy` fixture does it
with monkeypatch, and removes it afterwards); minipegx.backend finds CuPy through `import cupy`, as it would
the real one. `COUNTS.reset()`, then `COUNTS.syncs`, `COUNTS.sync_sites`, `COUNTS.launches`, ...
"""

from __future__ import annotations

import sys
import traceback
from collections import Counter

import numpy as np

DTYPES = {np.dtype(n) for n in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                "uint64", "float16", "float32", "float64", "complex64", "complex128")}
HERE = __file__


# ---------------------------------------------------------------------------------------------- counting
class Counts:
    """What the code under test asked of the device since the last reset()."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.syncs = 0
        self.sync_sites = Counter()      # "file:line (why)" -> count
        self.launches = 0
        self.h2d_bytes = 0
        self.h2d = []                    # (bytes, site) of every host-to-device copy
        self.d2h_bytes = 0
        self.widened = []                # (root numpy array, bytes, site) of every float16 -> float32 widening

    def sync(self, why):
        self.syncs += 1
        self.sync_sites[f"{site()} ({why})"] += 1

    def upload(self, nbytes):
        self.h2d_bytes += int(nbytes)
        self.h2d.append((int(nbytes), site()))

    def widen(self, src, nbytes):
        self.widened.append((root(src), int(nbytes), site()))


COUNTS = Counts()


def site():
    """The first frame outside this file and NumPy: where the code under test asked."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename != HERE and "/numpy/" not in frame.filename:
            return f"{'/'.join(frame.filename.split('/')[-2:])}:{frame.lineno}"
    return "?"


def root(a):
    """The NumPy array that owns a's memory (views share their base's identity)."""
    while isinstance(getattr(a, "base", None), np.ndarray):
        a = a.base
    return a


def check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise TypeError(f"Unsupported dtype {dtype} (the CuPy stand-in holds CuPy 13's dtypes only)")
    return dtype


# ---------------------------------------------------------------------------------------------- the array
class ndarray:
    """A device array: a NumPy array that refuses to leave the device implicitly."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 1000
    __array_ufunc__ = None               # NumPy defers to us for `np_array + x`, and we refuse it
    __hash__ = None

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"internal: {type(a)}")
        check_dtype(a.dtype)
        self._a = a

    # Host conversion: refused unless explicit; explicit ones synchronise.
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None):
        COUNTS.sync("get")
        COUNTS.d2h_bytes += self._a.nbytes
        return self._a.copy()

    def set(self, arr):
        COUNTS.upload(arr.nbytes)
        self._a[...] = arr

    def item(self):
        COUNTS.sync("item")
        return self._a.item()

    def tolist(self):
        COUNTS.sync("tolist")
        return self._a.tolist()

    def __bool__(self):
        COUNTS.sync("bool")
        return bool(self._a)

    def __int__(self):
        COUNTS.sync("int")
        return int(self._a)

    def __float__(self):
        COUNTS.sync("float")
        return float(self._a)

    def __complex__(self):
        COUNTS.sync("complex")
        return complex(self._a)

    def __index__(self):
        COUNTS.sync("index")
        return self._a.__index__()

    def __repr__(self):
        COUNTS.sync("repr")
        return "standin." + repr(self._a)

    def __str__(self):
        COUNTS.sync("str")
        return str(self._a)

    def __format__(self, spec):
        COUNTS.sync("format")
        return format(self._a, spec)

    def __reduce__(self):
        raise TypeError("a device array is not pickled implicitly; bring it back with .get() first")

    # Metadata: free.
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: cuda.Device(0))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(r)) for r in self._a)

    # Indexing.
    def __getitem__(self, key):
        key = index(key)
        if _bool_index(key):
            COUNTS.sync("boolean-mask index")
        out = self._a[key]
        if not _is_view(out, self._a):
            COUNTS.launches += 1
        return wrap(out)

    def __setitem__(self, key, value):
        key = index(key)
        if isinstance(value, np.ndarray):       # CuPy copies host values in; counted as an upload
            COUNTS.upload(value.nbytes)
        else:
            value = unwrap(value)
        COUNTS.launches += 1
        self._a[key] = value

    # Methods.
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dtype = check_dtype(dtype)
        if dtype == self._a.dtype and not copy:
            return self
        if self._a.dtype == np.float16 and dtype == np.float32:
            COUNTS.widen(self._a, self._a.size * 4)
        COUNTS.launches += 1
        return ndarray(self._a.astype(dtype))

    def copy(self, order="C"):
        COUNTS.launches += 1
        return ndarray(self._a.copy(order))

    def view(self, dtype=None):
        return ndarray(self._a.view() if dtype is None else self._a.view(check_dtype(dtype)))

    def fill(self, value):
        COUNTS.launches += 1
        self._a.fill(unwrap(value))

    def sort(self, axis=-1):
        COUNTS.sync("sort")
        COUNTS.launches += 1
        self._a.sort(axis=axis)

    def __getattr__(self, name):
        if name in VIEW_METHODS:
            fn = getattr(self._a, name)
            return lambda *a, **k: wrap(fn(*unwrap(a), **unwrap(k)))
        if name == "flatten":
            return lambda: ndarray(self._a.ravel()).copy()
        if name in METHODS:
            return lambda *a, **k: __getattr__(name)(self, *a, **k)
        raise AttributeError(f"the CuPy stand-in's ndarray has no attribute {name!r}")


VIEW_METHODS = {"reshape", "transpose", "swapaxes", "squeeze", "ravel", "diagonal"}
METHODS = {"sum", "mean", "max", "min", "all", "any", "argmax", "argmin", "cumsum", "prod", "var", "std",
           "clip", "round", "take", "repeat", "dot", "nonzero", "argsort", "flatten", "conj", "argpartition",
           "partition"}


def _is_view(out, a):
    return isinstance(out, np.ndarray) and out.base is not None and root(out) is root(a)


def _bool_index(key):
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, np.ndarray) and k.dtype == bool for k in keys)


def index(key):
    """An index with device arrays unwrapped; host arrays and lists are uploaded (CuPy converts them)."""
    if isinstance(key, tuple):
        return tuple(index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, np.ndarray):
        COUNTS.upload(key.nbytes)
        return key
    if isinstance(key, list):
        a = np.asarray([unwrap(k) for k in key]) if any(isinstance(k, ndarray) for k in key) else np.asarray(key)
        COUNTS.upload(a.nbytes)
        return a
    return key


def unwrap(x):
    """Device arrays -> their NumPy arrays; a host NumPy array in a device operation is refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError("Unsupported type <class 'numpy.ndarray'>: a NumPy array in a CuPy operation "
                        "(move it to the device first with cupy.asarray)")
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v) for k, v in x.items()}
    return x


def wrap(r):
    """NumPy results -> device arrays (scalars from full reductions become 0-d arrays, as in CuPy)."""
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic):
        return ndarray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(wrap(v) for v in r)
    if isinstance(r, list):
        return [wrap(v) for v in r]
    return r


def _widening(args, out):
    """A float16 operand of a product whose result is float32 is widened: CuPy casts matmul operands to the
    result dtype before cuBLAS, a float32 copy of the operand. (Elementwise kernels cast each element in
    registers as they read it, so `float32_array * float16_array` materialises no copy and is not counted.)"""
    if isinstance(out, np.ndarray) and out.dtype == np.float32:
        for a in args:
            if isinstance(a, np.ndarray) and a.dtype == np.float16 and a.size > 1:
                COUNTS.widen(a, a.size * 4)


def _matmul(a, b):
    """cuBLAS for half inputs: float32 accumulation, the result rounded once to float16."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype == np.float16:
        with np.errstate(over="ignore"):           # past 65504 cuBLAS gives inf silently, as this does
            return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
    return np.matmul(a, b)


def _binary(fn, product=False):
    def op(self, other):
        if isinstance(other, np.ndarray):
            unwrap(other)                       # raises: CuPy refuses host arrays in device operations
        if not isinstance(other, (ndarray, int, float, complex, bool, np.generic)):
            return NotImplemented
        a, b = self._a, unwrap(other)
        out = fn(a, b)
        COUNTS.launches += 1
        if product:
            _widening((a, b), out)
        return wrap(out)
    return op


def _inplace(fn):
    def op(self, other):
        if isinstance(other, np.ndarray):
            unwrap(other)
        fn(self._a, unwrap(other))
        COUNTS.launches += 1
        return self
    return op


_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
        "floordiv": np.floor_divide, "mod": np.mod, "pow": np.power, "and": np.bitwise_and,
        "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift, "rshift": np.right_shift}
for _name, _fn in _OPS.items():
    setattr(ndarray, f"__{_name}__", _binary(_fn))
    setattr(ndarray, f"__r{_name}__", _binary(lambda a, b, f=_fn: f(b, a)))
    setattr(ndarray, f"__i{_name}__", _inplace(lambda a, b, f=_fn: f(a, b, out=a)))
ndarray.__matmul__ = _binary(_matmul, product=True)
ndarray.__rmatmul__ = _binary(lambda a, b: _matmul(b, a), product=True)
for _name, _fn in {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
                   "eq": np.equal, "ne": np.not_equal}.items():
    setattr(ndarray, f"__{_name}__", _binary(_fn))
for _name, _fn in {"neg": np.negative, "pos": np.positive, "abs": np.abs, "invert": np.invert}.items():
    setattr(ndarray, f"__{_name}__", lambda self, f=_fn: _launch(f(self._a)))


def _launch(out):
    COUNTS.launches += 1
    return wrap(out)


# ---------------------------------------------------------------------------------------------- the module
def asarray(a, dtype=None, order=None):
    """Host data -> device (an upload, counted); a device array passes through (cast if asked)."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    if isinstance(a, (list, tuple)) and any(isinstance(v, ndarray) for v in a):
        return __getattr__("stack")([asarray(v) for v in a])
    host = np.asarray(a)
    check_dtype(host.dtype)                 # an ml_dtypes bfloat16 array is refused before any copy
    if dtype is not None:
        host = host.astype(check_dtype(dtype))   # CuPy copies first, then casts on the device: same bytes here
    COUNTS.upload(host.nbytes)
    return ndarray(np.array(host, copy=True))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    out = asarray(a, dtype)
    return out.copy() if copy and isinstance(a, ndarray) else out


def asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype) if not isinstance(a, ndarray) else a
    if a._a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    COUNTS.launches += 1
    return ndarray(np.ascontiguousarray(a._a, dtype))


def _creator(fn):
    def make(*args, **kwargs):
        if "dtype" in kwargs and kwargs["dtype"] is not None:
            check_dtype(kwargs["dtype"])
        COUNTS.launches += 1
        out = fn(*unwrap(args), **unwrap(kwargs))
        return wrap(out)
    return make


_SORTS = {"sort", "argsort", "partition", "argpartition", "unique", "lexsort", "median", "percentile",
          "quantile"}
_DATA_DEPENDENT = {"nonzero", "flatnonzero", "argwhere", "compress", "extract"}
_PRODUCTS = {"matmul", "dot", "einsum", "tensordot", "inner", "vdot"}
_VIEWS = {"reshape", "transpose", "swapaxes", "broadcast_to", "expand_dims", "squeeze", "moveaxis", "ravel"}
_CREATORS = {"zeros", "ones", "empty", "full", "arange", "linspace", "eye", "zeros_like", "ones_like",
             "empty_like", "full_like", "tri"}
_PASS = {"dtype", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
         "uint32", "uint64", "bool_", "complex64", "complex128", "newaxis", "inf", "nan", "pi", "e",
         "finfo", "iinfo", "errstate", "result_type", "promote_types", "can_cast", "integer", "floating",
         "ndim", "shape"}


def _function(name):
    fn = getattr(np, name)
    if name in _PASS:
        return fn
    if name in _CREATORS:
        return _creator(fn)
    if isinstance(fn, np.ufunc):
        return _Ufunc(name, _call(name, fn))
    return _call(name, fn)


def _call(name, fn):

    def call(*args, **kwargs):
        if name in _SORTS:
            COUNTS.sync(name)
        if name in _DATA_DEPENDENT:
            COUNTS.sync(name)
        uargs, ukw = unwrap(args), unwrap(kwargs)
        if name == "matmul":
            out = _matmul(*uargs, **ukw)
        elif name == "einsum" and all(getattr(a, "dtype", None) == np.float16 for a in uargs[1:]):
            out = np.einsum(uargs[0], *(a.astype(np.float32) for a in uargs[1:])).astype(np.float16)
        else:
            out = fn(*uargs, **ukw)
        if name not in _VIEWS:
            COUNTS.launches += 1
        if name in _PRODUCTS:
            _widening(uargs[1:] if name == "einsum" else uargs, out)
        if "out" in kwargs and isinstance(kwargs["out"], ndarray):
            return kwargs["out"]
        return wrap(out)
    call.__name__ = name
    return call


# The ufuncs whose `.at` CuPy implements, as a scatter kernel of atomic operations (ufunc.at calls
# ndarray._scatter_op with 'add', 'max' or 'min'); any other ufunc's `.at` raises NotImplementedError there.
_SCATTER = {"add", "maximum", "minimum"}


class _Ufunc:
    """cupy.ufunc: calling it is the elementwise kernel; `at` is CuPy's scatter (numpy.ufunc.at's meaning).

    `add.at(a, indices, b)` adds every b entry into a[indices], repeated indices included (atomicAdd on the
    GPU, so the order of a repeated index's additions is not fixed there; here it is NumPy's). One counted
    launch, in place, nothing returned. As in CuPy: `a` must be a device array; b is cast to a's dtype; host
    indices or a host b are copied to the device (counted uploads); a boolean mask's True count decides the
    shape (a counted synchronisation). Stricter than CuPy: an out-of-range index raises IndexError (NumPy's),
    where CuPy's kernel wraps it silently modulo the axis length."""

    def __init__(self, name, call):
        self.__name__ = name
        self._call = call
        self._np = getattr(np, name)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def at(self, a, indices, b=None):
        if self.__name__ not in _SCATTER:
            raise NotImplementedError(f"`{self.__name__}.at` is not supported yet")   # CuPy's message
        if not isinstance(a, ndarray):
            raise TypeError(f"{self.__name__}.at updates a device array in place, got {type(a).__name__}")
        if b is None:
            raise ValueError(f"{self.__name__}.at needs the values to scatter (b)")
        key = index(indices)
        if _bool_index(key):
            COUNTS.sync("boolean-mask scatter")
        if isinstance(b, ndarray):
            values = b._a
        else:                                               # CuPy copies host values in (core.array)
            values = np.asarray(b)
            if values.ndim:
                COUNTS.upload(values.nbytes)
        values = values.astype(a.dtype, copy=False)         # CuPy: value.astype(a.dtype)
        COUNTS.launches += 1
        self._np.at(a._a, key, values)


_FUNCTIONS = {}   # wrappers made on first use, apart from this module's globals (`any`, `max`: builtins here)


def __getattr__(name):
    if name.startswith("__") or not hasattr(np, name):
        raise AttributeError(f"the CuPy stand-in has no {name!r}")
    if name not in _FUNCTIONS:
        _FUNCTIONS[name] = _function(name)
    return _FUNCTIONS[name]


class _Generator:
    """cupy.random.Generator: draws on the device (the stand-in draws NumPy's stream, so NumPy and the
    stand-in sample the same tokens; real CuPy has its own stream)."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def random(self, size=None, dtype=np.float64, out=None):
        COUNTS.launches += 1
        return ndarray(np.asarray(self._rng.random(size, dtype=dtype)))

    def standard_normal(self, size=None, dtype=np.float64):
        COUNTS.launches += 1
        return ndarray(np.asarray(self._rng.standard_normal(size, dtype=dtype)))


class random:  # noqa: N801 - the module's namespace, as cupy.random
    Generator = _Generator

    @staticmethod
    def default_rng(seed=None):
        return _Generator(seed)


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_POOL = _MemoryPool()


def get_default_memory_pool():
    return _POOL


class cuda:  # noqa: N801 - as cupy.cuda
    class runtime:  # noqa: N801
        @staticmethod
        def getDeviceCount():  # noqa: N802 - CUDA's name
            return 1

    class Device:
        def __init__(self, device=0):
            self.id = device

        def synchronize(self):
            COUNTS.sync("Device.synchronize")

        def use(self):
            if not 0 <= self.id < cuda.runtime.getDeviceCount():
                raise RuntimeError(f"cudaErrorInvalidDevice: device {self.id}")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    @staticmethod
    def is_available():
        return True


__version__ = "13.0.0-standin"


def install(modules=None):
    """Register this module as `cupy` (in `modules`, default sys.modules) and return it."""
    (sys.modules if modules is None else modules)["cupy"] = sys.modules[__name__]
    COUNTS.reset()
    return sys.modules[__name__]
