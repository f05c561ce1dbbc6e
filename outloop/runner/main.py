"""The runner's entry file: ``python -I -S <root>/outloop/runner/main.py --outloop-run [--family F]
[--rule R] -- COMMAND`` (see ``rewrite.runner_command``). Stdlib only, started without ``site`` so that
its start costs about a bare interpreter start."""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the ``outloop`` package beside it importable
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if _root not in sys.path:
        sys.path.append(_root)  # appended: the standard library keeps precedence

from outloop.runner.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
