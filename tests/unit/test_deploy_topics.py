"""deploy/k8s/components/kafka-topics/create-topics.sh (compose's kafka-init and the Kubernetes Job): run by a
POSIX sh against fake Kafka tools that keep topic state and record every call, and linted by shellcheck."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from maskwatch.topics import FRAMES_RETENTION_MS, MAX_MESSAGE_BYTES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "k8s" / "components" / "kafka-topics" / "create-topics.sh"

# A stand-in for Apache Kafka's kafka-topics.sh / kafka-configs.sh: topics are files holding a partition count.
FAKE_TOPICS = r"""#!/bin/sh
echo "kafka-topics.sh $*" >> "$FAKE_STATE/calls"
[ -f "$FAKE_STATE/down" ] && exit 1
op="" topic="" parts=""
while [ $# -gt 0 ]; do
  case "$1" in
    --list|--create|--describe|--alter) op=$1 ;;
    --topic) topic=$2; shift ;;
    --partitions) parts=$2; shift ;;
  esac
  shift
done
case "$op" in
  --list) ls "$FAKE_STATE/topics" ;;
  --create) [ -f "$FAKE_STATE/topics/$topic" ] || echo "$parts" > "$FAKE_STATE/topics/$topic" ;;
  --alter) echo "$parts" > "$FAKE_STATE/topics/$topic" ;;
  --describe)
    n=$(cat "$FAKE_STATE/topics/$topic")
    printf 'Topic: %s\tPartitionCount: %s\tReplicationFactor: 1\n' "$topic" "$n"
    i=0
    while [ "$i" -lt "$n" ]; do printf '\tTopic: %s\tPartition: %s\tLeader: 1\n' "$topic" "$i"; i=$((i + 1)); done ;;
esac
"""
FAKE_CONFIGS = r"""#!/bin/sh
echo "kafka-configs.sh $*" >> "$FAKE_STATE/calls"
"""


@pytest.fixture
def kafka(tmp_path: Path) -> Path:
    """A folder of fake Kafka tools; its state/ holds topics/ and the calls log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("kafka-topics.sh", FAKE_TOPICS), ("kafka-configs.sh", FAKE_CONFIGS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "state" / "topics").mkdir(parents=True)
    (tmp_path / "state" / "calls").write_text("")
    return tmp_path


def run(kafka: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ["PATH"],
        "KAFKA_BIN": str(kafka / "bin"),
        "FAKE_STATE": str(kafka / "state"),
        "BOOTSTRAP": "kafka:9092",
        "KAFKA_WAIT_TRIES": "2",
        "KAFKA_WAIT_S": "0",
        **env,
    }
    return subprocess.run(["sh", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=30, check=False)


def partitions(kafka: Path, topic: str) -> int:
    return int((kafka / "state" / "topics" / topic).read_text())


def calls(kafka: Path, tool: str) -> list[list[str]]:
    lines = (kafka / "state" / "calls").read_text().splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith(tool)]


@pytest.mark.timeout(30)
def test_creates_both_topics_with_the_contract_settings(kafka: Path) -> None:
    out = run(kafka, MW_PARTITIONS="12")
    assert out.returncode == 0, out.stderr
    assert partitions(kafka, "frames") == 12
    assert partitions(kafka, "frames.dlq") == 1
    creates = [c for c in calls(kafka, "kafka-topics.sh") if "--create" in c]
    frames = next(c for c in creates if "frames" in c)
    configs = {frames[i + 1] for i, a in enumerate(frames) if a == "--config"}
    assert f"retention.ms={FRAMES_RETENTION_MS}" in configs
    assert f"max.message.bytes={MAX_MESSAGE_BYTES}" in configs
    assert MAX_MESSAGE_BYTES >= 4 * 1024 * 1024
    segment_ms = int(next(c for c in configs if c.startswith("segment.ms=")).split("=")[1])
    assert segment_ms <= FRAMES_RETENTION_MS, "without a segment roll the retention never applies"
    alters = calls(kafka, "kafka-configs.sh")
    assert [a[a.index("--entity-name") + 1] for a in alters] == ["frames", "frames.dlq"]
    assert "--command-config" not in " ".join(" ".join(c) for c in calls(kafka, "kafka-"))


@pytest.mark.timeout(30)
def test_rerun_grows_partitions_but_never_tries_to_shrink(kafka: Path) -> None:
    assert run(kafka, MW_PARTITIONS="12").returncode == 0
    grown = run(kafka, MW_PARTITIONS="24")
    assert grown.returncode == 0, grown.stderr
    assert partitions(kafka, "frames") == 24
    shrink = run(kafka, MW_PARTITIONS="6")
    assert shrink.returncode == 0, shrink.stderr
    assert partitions(kafka, "frames") == 24
    assert "cannot shrink" in shrink.stderr


@pytest.mark.timeout(30)
def test_names_and_client_config_come_from_the_environment(kafka: Path, tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_SSL\n")
    out = run(kafka, MW_TOPIC="site1.frames", MW_DLQ_TOPIC="site1.frames.dlq", KAFKA_CLIENT_CONFIG=str(props))
    assert out.returncode == 0, out.stderr
    assert partitions(kafka, "site1.frames") == 12
    every = calls(kafka, "kafka-")
    assert every and all(c[c.index("--command-config") + 1] == str(props) for c in every)


@pytest.mark.timeout(30)
def test_fails_when_no_broker_answers(kafka: Path) -> None:
    (kafka / "state" / "down").write_text("")
    out = run(kafka)
    assert out.returncode == 1
    assert "no Kafka broker answers at kafka:9092" in out.stderr


@pytest.mark.timeout(60)
def test_shellcheck_finds_nothing() -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck is not installed: `apt-get install shellcheck` (Debian package; .ci/run installs it)")
    out = subprocess.run([exe, "-s", "sh", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
