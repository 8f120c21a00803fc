"""The site file: valid files load; bad ones name file, line, camera and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from maskwatch.site import CameraConfig, SiteError, demo_site, load_site, parse_site, parse_synthetic, redact
from producer.app import shard_of

pytestmark = pytest.mark.timeout(30)

GOOD = """\
site: airport
cameras:
  - id: gate-a
    name: Gate A
    zone: departures
    source: synthetic:mixed
    fps: 5
  - id: gate-b
    source: rtsp://10.0.0.5/stream1
"""


def test_good_site() -> None:
    s = parse_site(GOOD, "site.yaml")
    assert s.site == "airport"
    assert [c.id for c in s.cameras] == ["gate-a", "gate-b"]
    assert s.cameras[0].kind == "synthetic" and s.cameras[1].kind == "rtsp"
    assert s.cameras[1].fps == 5.0 and s.cameras[1].display_name == "gate-b"


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (GOOD.replace("fps: 5", "fps: -1"), ["site.yaml:7:", "camera=gate-a", "field=fps"]),
        (GOOD.replace("id: gate-b", "id: 'gate b'"), ["site.yaml:8:", "camera=gate b", "field=id"]),
        (
            GOOD.replace("    zone: departures\n", "    zone: departures\n    colour: red\n"),
            ["site.yaml:6:", "camera=gate-a", "field=colour"],
        ),
        (GOOD.replace("id: gate-b", "id: gate-a"), ["site.yaml:3:", "field=cameras", "duplicate"]),
        (GOOD.replace("  - id: gate-b\n", "  - name: x\n"), ["site.yaml:8:", "camera=#1", "field=id", "required"]),
        ("site: [\n", ["site.yaml:2:", "not valid YAML"]),
        ("- 1\n", ["site.yaml:1:", "mapping"]),
        # one row per kind of mistake an operator makes
        (
            GOOD.replace("    name: Gate A\n", "    name: Gate A\n    fpss: 5\n"),
            ["site.yaml:5:", "camera=gate-a", "field=fpss", "Extra inputs"],
        ),
        (GOOD.replace("id: gate-a", "id: -gate"), ["site.yaml:3:", "camera=-gate", "field=id", "must match"]),
        (
            GOOD.replace("    source: rtsp://10.0.0.5/stream1\n", ""),
            ["site.yaml:8:", "camera=gate-b", "field=source", "required"],
        ),
        (
            GOOD.replace("source: rtsp://10.0.0.5/stream1", "source: ''"),
            ["site.yaml:9:", "camera=gate-b", "field=source"],
        ),
        (GOOD.replace("fps: 5", "fps: 0"), ["site.yaml:7:", "camera=gate-a", "field=fps", "greater than 0"]),
        (
            GOOD.replace("fps: 5", "fps: 500"),
            ["site.yaml:7:", "camera=gate-a", "field=fps", "less than or equal to 60"],
        ),
        (GOOD + "    drop_policy: newest\n", ["site.yaml:10:", "camera=gate-b", "field=drop_policy", "drop_oldest"]),
        (GOOD + "    queue_size: 0\n", ["site.yaml:10:", "camera=gate-b", "field=queue_size"]),
        (
            GOOD.replace("rtsp://10.0.0.5", "ftp://10.0.0.5"),
            ["site.yaml:9:", "camera=gate-b", "field=source", "unsupported scheme ftp://"],
        ),
        (GOOD.replace("rtsp://10.0.0.5/stream1", "rtsp:///stream1"), ["site.yaml:9:", "field=source", "no host"]),
        (GOOD.replace("rtsp://10.0.0.5/stream1", "webcam:front"), ["site.yaml:9:", "field=source", "webcam:<index>"]),
        (
            GOOD.replace("synthetic:mixed", "synthetic:crowd"),
            ["site.yaml:6:", "camera=gate-a", "field=source", "unknown synthetic scene"],
        ),
        ("cameras:\n  - id: a\n    source: synthetic\n    colour: red\n", ["site.yaml:4:", "camera=a", "field=colour"]),
        ("sites: x\n", ["site.yaml:1:", "field=sites", "Extra inputs"]),
    ],
)
def test_bad_site_names_place(text: str, expect: list[str]) -> None:
    with pytest.raises(SiteError) as e:
        parse_site(text, "site.yaml")
    for part in expect:
        assert part in str(e.value), str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="cannot read"):
        load_site(tmp_path / "nope.yaml")


def test_errors_never_show_a_password() -> None:
    text = GOOD.replace("rtsp://10.0.0.5/stream1", "ftp://admin:hunter2@10.0.0.5/s")
    with pytest.raises(SiteError) as e:
        parse_site(text, "site.yaml")
    assert "unsupported scheme" in str(e.value) and "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("source", "kind", "live"),
    [
        ("synthetic", "synthetic", False),
        ("synthetic:bare@320x240", "synthetic", False),
        ("rtsp://cam/1", "rtsp", True),
        ("rtsps://cam/1", "rtsp", True),
        ("http://cam/video.mjpg", "http", True),
        ("https://cam/live.m3u8", "http", True),
        ("mjpeg+http://cam/video", "mjpeg", True),
        ("webcam:0", "webcam", True),
        ("recordings/gate.mp4", "file", False),
        ("synthetic_gate.mp4", "file", False),
    ],
)
def test_source_kinds(source: str, kind: str, live: bool) -> None:
    cam = CameraConfig(id="c", source=source)
    assert (cam.kind, cam.live) == (kind, live)


def test_folder_kind_and_drop_policy_defaults(tmp_path: Path) -> None:
    live = CameraConfig(id="c", source="rtsp://cam/1")
    assert live.handoff_policy == "drop_oldest"
    once = CameraConfig(id="c", source=str(tmp_path), loop=False)
    assert once.kind == "folder" and once.handoff_policy == "wait"  # a recording is sent whole
    looping = CameraConfig(id="c", source=str(tmp_path))
    assert looping.handoff_policy == "drop_oldest"
    forced = CameraConfig(id="c", source=str(tmp_path), loop=False, drop_policy="drop_newest")
    assert forced.handoff_policy == "drop_newest"


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("http://10.0.0.5/s", "http://10.0.0.5/s"),
        ("http://user@10.0.0.5/s", "http://user@10.0.0.5/s"),
        ("synthetic:mixed", "synthetic:mixed"),
        ("rtsp://admin:pa#ss@10.0.0.5/s", "rtsp://admin:***@10.0.0.5/s"),
        ("rtsp://admin:pa/ss@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("rtsp://admin:pa?ss@cam-1.local/s?x=1", "rtsp://admin:***@cam-1.local/s?x=1"),
        ("rtsp://admin:p@ss@[fe80::1]:554/s", "rtsp://admin:***@[fe80::1]:554/s"),
        ("rtsp://admin:hunter2@10.0.0.5", "rtsp://admin:***@10.0.0.5"),
        ("http://10.0.0.5/cgi?user=admin&password=hunter2&res=hd", "http://10.0.0.5/cgi?user=admin&password=***&res=hd"),
        ("http://10.0.0.5/s?token=abc#def&fps=5", "http://10.0.0.5/s?token=***&fps=5"),
        ("https://cam/api?API_KEY=k1&pwd=x&sig=y&Auth=z", "https://cam/api?API_KEY=***&pwd=***&sig=***&Auth=***"),
        ("http://cam/snap@2x.jpg", "http://cam/snap@2x.jpg"),
        ("mjpeg+http://u:s3cr%40t@cam:81/v?secret=q", "mjpeg+http://u:***@cam:81/v?secret=***"),
    ],
)
def test_redact(source: str, shown: str) -> None:
    assert redact(source) == shown


@pytest.mark.parametrize(
    ("source", "parsed"), [("synthetic", ("mixed", 640, 480)), ("synthetic:bare@320x240", ("bare", 320, 240))]
)
def test_parse_synthetic(source: str, parsed: tuple[str, int, int]) -> None:
    assert parse_synthetic(source) == parsed


def test_shards_split_by_id_and_ignore_positions() -> None:
    cams = demo_site(40).cameras
    shards = [shard_of(cams, f"{i}/3") for i in range(3)]
    assert sorted(c.id for s in shards for c in s) == sorted(c.id for c in cams)  # each camera in exactly one shard
    assert all(shards)  # 40 ids spread over every shard
    assert [c.id for c in shard_of(cams, "0/1")] == [c.id for c in cams]
    # a camera added at the front moves no other camera to another shard
    grown = [CameraConfig(id="new-cam", source="synthetic"), *cams]
    for i in range(3):
        assert [c.id for c in shard_of(grown, f"{i}/3") if c.id != "new-cam"] == [c.id for c in shards[i]]


@pytest.mark.parametrize("shard", ["2/2", "0/0", "1/0"])
def test_bad_shard_is_a_settings_error(shard: str) -> None:
    from pydantic import ValidationError

    from producer.settings import ProducerSettings

    with pytest.raises(ValidationError, match="shard"):
        ProducerSettings(shard=shard)


def test_the_example_site_file_is_valid() -> None:
    site = load_site(Path(__file__).resolve().parents[2] / "producer" / "site.example.yaml")
    kinds = {c.id: c.kind for c in site.cameras}
    assert kinds == {
        "gate-a": "rtsp",
        "gate-b": "http",
        "lobby": "mjpeg",
        "desk": "webcam",
        "replay": "file",
        "stills": "folder",
        "demo": "synthetic",
    }
    assert [c.id for c in site.cameras if not c.enabled] == ["stills"]


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: f"{d}/nope.mp4", "no such file"),
        (lambda d: f"{d}/nope/", "no such folder"),
        (lambda d: f"{d}/clip.mp4/", "not a folder"),
        (lambda d: f"{d}/frames", "not a file"),
    ],
)
def test_checked_file_and_folder_sources_must_exist(tmp_path: Path, make: Any, expect: str) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "frames").mkdir()
    source = make(tmp_path)
    if expect == "not a file":  # a folder without the trailing slash is a folder source: fine
        parse_site(f"cameras:\n  - id: c\n    source: {source}\n", "site.yaml", check_sources=True)
        return
    text = f"site: s\ncameras:\n  - id: ok\n    source: synthetic\n  - id: c\n    source: {source}\n"
    parse_site(text, "site.yaml")  # without the check (a dashboard on another host), the file loads
    with pytest.raises(SiteError) as e:
        parse_site(text, "site.yaml", check_sources=True)
    assert str(e.value).startswith("site.yaml:6: camera=c field=source: ")
    assert expect in str(e.value)


def test_checked_sources_skip_disabled_cameras_and_accept_existing(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x")
    text = f"cameras:\n  - id: a\n    source: {tmp_path}/clip.mp4\n  - id: b\n    source: {tmp_path}/gone.mp4\n    enabled: false\n"
    assert len(parse_site(text, "s.yaml", check_sources=True).cameras) == 2


@pytest.mark.parametrize("password", ["hunter2", "pa#ss", "pa/ss", "pa?ss", "p@ss", "a:b", "%40x", "tr1cky&pw=1"])
@pytest.mark.parametrize("template", ["rtsp://admin:{}@10.0.0.5:554/stream1", "http://cam.local/snap.cgi?user=a&password={}&r=1"])
def test_redact_never_shows_the_password(template: str, password: str) -> None:
    shown = redact(template.format(password))
    assert password not in shown and "***" in shown
