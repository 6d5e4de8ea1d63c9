"""``python -m genssl_hf`` (and ``accelerate launch -m genssl_hf``): the ``genssl`` command."""

import sys

from genssl_hf.cli import main

if __name__ == "__main__":
    sys.exit(main())
