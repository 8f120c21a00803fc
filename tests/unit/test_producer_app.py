"""The producer's main-loop pieces without a broker: Redis outages are survived quietly, a broken site file
on reload changes nothing and says why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from maskwatch.procs import free_port
from maskwatch.store import Store
from producer.app import Producer
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher
from producer.settings import ProducerSettings

pytestmark = pytest.mark.timeout(30)

SITE = "site: t\ncameras:\n  - {id: a, source: 'synthetic:bare@64x48', fps: 2}\n"


def _producer(tmp_path: Path, site_text: str = SITE) -> Producer:
    site = tmp_path / "site.yaml"
    site.write_text(site_text)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: Redis is down
    settings = ProducerSettings(site_file=str(site), redis_url=url)
    return Producer(settings, Store.from_url(url), Publisher(["127.0.0.1:1"], "frames"), ProducerMetrics(), "p1")


def test_redis_down_is_logged_once_and_nothing_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = _producer(tmp_path)
    caplog.set_level(logging.WARNING, "producer.app")
    for _ in range(3):
        app.write_status()
        app.heartbeat()
        app.poll_reload_request()
    assert len([r for r in caplog.records if "redis unavailable" in r.getMessage()]) == 1
    assert app.reload_gen is None  # no baseline until Redis answers: no spurious reload later


def test_broken_site_on_reload_keeps_the_cameras(tmp_path: Path) -> None:
    app = _producer(tmp_path)
    app.reload("start")
    assert list(app.supervisor.cameras) == ["a"] and app.reload_ok
    (tmp_path / "site.yaml").write_text(SITE.replace("fps: 2", "fps: -2"))
    try:
        app.reload("SIGHUP")
        assert not app.reload_ok and "site.yaml:3: camera=a field=fps" in app.reload_msg
        assert list(app.supervisor.cameras) == ["a"] and app.supervisor.cameras["a"].alive
        # a file source that does not exist is refused at reload as at start, naming file, line and camera
        (tmp_path / "site.yaml").write_text(SITE + f"  - {{id: c, source: '{tmp_path}/gone.mp4'}}\n")
        app.reload("SIGHUP")
        assert not app.reload_ok and "site.yaml:4: camera=c field=source: no such file" in app.reload_msg
        assert list(app.supervisor.cameras) == ["a"]
        (tmp_path / "site.yaml").write_text(SITE.replace("id: a", "id: b"))
        app.reload("SIGHUP")
        assert app.reload_ok and app.reload_msg == "added=1 removed=1 changed=0 unchanged=0"
        rows = app.supervisor.status_rows()
        assert rows["a"]["status"] == "offline" and set(rows) == {"a", "b"}
    finally:
        app.supervisor.stop_all()
