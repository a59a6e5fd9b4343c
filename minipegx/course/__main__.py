import sys

from ..errors import MiniPegxError
from .grade import main

try:
    code = main()
except MiniPegxError as e:              # a wrong folder, --out, --user...: one line, not a traceback
    print(f"python -m minipegx.course: error: {e}", file=sys.stderr)
    code = 2
except KeyboardInterrupt:
    print("python -m minipegx.course: interrupted; the CSV holds every notebook graded so far (--resume "
          "continues)", file=sys.stderr)
    code = 130
raise SystemExit(code)
