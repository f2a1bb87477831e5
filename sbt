#!/usr/bin/env bash
# sbt for this repository without installing sbt (see tools/sbt-launch.sh).
# Examples: ./sbt test    ./sbt package    ./sbt -Dsynapsemlext.sparkLine=4.0 compile
cd "$(dirname "${BASH_SOURCE[0]}")" && exec tools/sbt-launch.sh "$@"
