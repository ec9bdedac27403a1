"""The file `spark-submit` runs on a cluster: the command line of `python -m scoring --engine
spark`, with the master spark-submit sets.

    spark-submit --master spark://host:7077 scoring/spark_submit.py \
        --models-dir models --model penguins:1 --data s3a://bucket/in.parquet \
        --out s3a://bucket/scored.parquet

The driver reads the model store and ships the verified version and this project's code to the
executors itself; their Python needs the packages of requirements/spark.txt (README, "Scale-out
scoring", says how).
"""

from __future__ import annotations

import sys
from pathlib import Path

# spark-submit puts this file's folder on the path, not the project's.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scoring.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "--engine", "spark"]))
