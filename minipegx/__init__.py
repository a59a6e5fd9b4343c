"""minipegx: PEGASUS-X from scratch, as small array functions over NumPy / CuPy."""

from .config import PegasusXConfig
from .errors import *  # noqa: F401,F403  (MiniPegxError and friends)

__version__ = "0.1.0"
