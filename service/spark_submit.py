"""The file to give ``spark-submit`` (it runs a Python application only from a ``.py`` file):

    spark-submit --master URL [spark options] \\
      "$(python -c 'import service.spark_submit as m; print(m.__file__)')" \\
      review --engine spark --export-dir LOCATION --out DIR [review options]

The arguments after the file are ``baclofen-check``'s; the review runs on the session that
``spark-submit`` starts (its master, its configuration).
"""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
