#!/usr/bin/env bash
# Runs sbt without an sbt installation: the launcher jar comes from Maven Central through
# Maven (`mvn dependency:get`), and sbt itself plus every dependency resolves from Maven
# Central only (tools/sbt-repositories), so CI and a fresh checkout need just Java 17 and
# Maven. Usage: tools/sbt-launch.sh [sbt arguments...]   (the ./sbt wrapper calls this)
set -euo pipefail

SBT_LAUNCH_VERSION="${SBT_LAUNCH_VERSION:-1.10.11}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
M2_REPO="${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}"
LAUNCHER="$M2_REPO/org/scala-sbt/sbt-launch/$SBT_LAUNCH_VERSION/sbt-launch-$SBT_LAUNCH_VERSION.jar"

if [[ ! -s "$LAUNCHER" ]]; then
  echo "sbt-launch.sh: fetching org.scala-sbt:sbt-launch:$SBT_LAUNCH_VERSION from Maven Central" >&2
  if command -v mvn >/dev/null; then
    mvn -q dependency:get -Dmaven.repo.local="$M2_REPO" \
      -Dartifact="org.scala-sbt:sbt-launch:$SBT_LAUNCH_VERSION"
  else
    # No Maven: the same file straight from Maven Central into the same local-repo path.
    url="https://repo1.maven.org/maven2/org/scala-sbt/sbt-launch/$SBT_LAUNCH_VERSION/sbt-launch-$SBT_LAUNCH_VERSION.jar"
    mkdir -p "$(dirname "$LAUNCHER")"
    curl -fsSL --retry 3 -o "$LAUNCHER.part" "$url"
    mv "$LAUNCHER.part" "$LAUNCHER"
  fi
fi

# The launcher's default resolvers include Ivy repositories outside Maven Central; the
# repositories file plus override.build.repos limit every resolution to Maven Central.
exec java ${SBT_JAVA_OPTS:--Xms512m -Xmx2g -Xss4m} \
  -Dsbt.repository.config="$REPO_ROOT/tools/sbt-repositories" \
  -Dsbt.override.build.repos=true \
  -Dsbt.supershell=false \
  -Dsbt.server.forcestart=false \
  -jar "$LAUNCHER" "$@"
