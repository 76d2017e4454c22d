"""Collect the Kafka broker's runtime jars from Maven Central.

``pom.xml`` beside this module lists the broker and the log4j binding; Maven
resolves their runtime dependencies into a ``libs`` folder that ``java -cp
'libs/*'`` can run. ``kafka-jars.sha256`` lists every jar that fetch must bring and
its checksum: a jar more, less or different (a new transitive version, a tampered
download) is refused in one line. Maven's own cache (~/.m2) makes a second fetch
cheap, and a marker file in ``libs`` makes it free (one fetch per checkout).
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from devstack.process import require_tool
from devstack.settings import KAFKA_VERSION, DevstackError

POM = Path(__file__).with_name("pom.xml")
JARS = Path(__file__).with_name("kafka-jars.sha256")
MARKER = ".complete"
_MAVEN_TIMEOUT_S = 900.0
# Maven's closing boilerplate; the line before it says what went wrong.
_BOILERPLATE = ("-> [Help", "Re-run Maven", "For more information", "[Help ", "To see the full")
# Debian's Maven colours its output even in batch mode; the codes would hide "[ERROR]".
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def kafka_home(devstack_dir: Path, version: str = KAFKA_VERSION) -> Path:
    """``<devstack_dir>/kafka-<version>``: the pom copy and the ``libs`` folder."""
    return devstack_dir / f"kafka-{version}"


def _fingerprint(version: str) -> str:
    # A new pom (say, another log4j version), jar list or Kafka version: a fresh fetch.
    return hashlib.sha256(POM.read_bytes() + JARS.read_bytes() + version.encode()).hexdigest()


def expected_jars(manifest: Path = JARS) -> dict[str, str]:
    """Jar name -> SHA-256 from ``kafka-jars.sha256`` (``sha256sum`` lines, ``#`` comments)."""
    jars = {}
    for line in manifest.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            jars[name.strip()] = digest
    return jars


def check_jars(libs_dir: Path, manifest: Path = JARS) -> None:
    """Raise DevstackError (one line) unless ``libs_dir`` holds exactly the listed jars."""
    want = expected_jars(manifest)
    have = {p.name: p for p in libs_dir.glob("*.jar")}
    extra, missing = sorted(have.keys() - want.keys()), sorted(want.keys() - have.keys())
    if extra or missing:
        raise DevstackError(
            f"the Kafka jars Maven fetched into {libs_dir} differ from {manifest.name}: "
            f"unexpected {', '.join(extra) or 'none'}; missing {', '.join(missing) or 'none'}"
        )
    for name, path in sorted(have.items()):
        if hashlib.sha256(path.read_bytes()).hexdigest() != want[name]:
            raise DevstackError(f"{path} does not match its SHA-256 in {manifest.name}")


def jars_ready(libs_dir: Path, version: str = KAFKA_VERSION) -> bool:
    """True when ``libs_dir`` holds a complete fetch for this pom and version."""
    marker = libs_dir / MARKER
    return marker.is_file() and marker.read_text().strip() == _fingerprint(version)


def maven_error_line(output: str) -> str:
    """The most telling ``[ERROR]`` line of Maven output (its last non-boilerplate one)."""
    errors = []
    output = _ANSI.sub("", output)
    for line in output.splitlines():
        text = line.strip()
        if not text.startswith("[ERROR]"):
            continue
        text = text.removeprefix("[ERROR]").strip()
        if text and not text.startswith(_BOILERPLATE):
            errors.append(text)
    if errors:
        return errors[-1]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def fetch_kafka_jars(
    libs_dir: Path,
    version: str = KAFKA_VERSION,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Fill ``libs_dir`` with the broker's runtime jars unless already complete.

    Safe to call from several processes at once: a file lock beside ``libs_dir``
    makes the second caller wait and then find the jars in place.

    Args:
        libs_dir: Target folder (``.../kafka-<version>/libs``).
        version: Kafka version to fetch.
        progress: Told once, in words, when Maven is about to run.

    Returns:
        True when Maven ran, False when the jars were already there.

    Raises:
        DevstackError: ``mvn`` is missing or Maven failed (with its error line).
    """
    if jars_ready(libs_dir, version):
        return False
    home = libs_dir.parent
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_ready(libs_dir, version):
            return False
        if progress is not None:
            progress(f"fetching Kafka {version} jars with Maven into {libs_dir} (once)")
        _run_maven(home, libs_dir, version)
    return True


def run_maven(args: list[str], cwd: Path, what: str) -> None:
    """Run ``mvn -q -B <args>`` in ``cwd``; a failure is one line naming ``what`` it fetched.

    Raises:
        DevstackError: ``mvn`` is missing, failed (its telling error line) or timed out.
    """
    mvn = require_tool("mvn", "install Maven 3.8+ (Debian: apt-get install maven)")
    try:
        result = subprocess.run(
            [mvn, "-q", "-B", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(f"maven did not fetch {what} within {_MAVEN_TIMEOUT_S:.0f}s") from exc
    if result.returncode != 0:
        detail = maven_error_line(result.stdout + "\n" + result.stderr)
        raise DevstackError(f"maven could not fetch {what}: {detail}")


def _run_maven(home: Path, libs_dir: Path, version: str) -> None:
    # Start clean so jars of an older pom never share the classpath with new ones.
    shutil.rmtree(libs_dir, ignore_errors=True)
    pom = home / "pom.xml"
    shutil.copyfile(POM, pom)
    args = ["-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={libs_dir}", f"-Dkafka.version={version}"]  # fmt: skip
    run_maven(args, home, f"the Kafka {version} jars")
    if not any(libs_dir.glob(f"kafka_2.13-{version}.jar")):
        raise DevstackError(f"maven ran but {libs_dir} has no kafka_2.13-{version}.jar")
    if version == KAFKA_VERSION:  # the list is of this version's jars
        check_jars(libs_dir)
    (libs_dir / MARKER).write_text(_fingerprint(version) + "\n")
