"""The `maskwatch` command: `up` runs the whole stack on one machine; `stats`, `report` and `cameras` answer from Redis."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError

from maskwatch.frames import is_valid_camera_id
from maskwatch.lifecycle import stop_event
from maskwatch.logs import setup_logging
from maskwatch.model_api import MODEL_NAME
from maskwatch.payloads import WINDOWS, CameraSummary
from maskwatch.settings import CommonSettings, add_flags, flags_over_env
from maskwatch.site import SiteError, load_site
from maskwatch.stack import Stack, StackConfig, StackSettings
from maskwatch.store import CameraStillSent, Store, camera_summaries, camera_summary, remove_camera


def _up(args: argparse.Namespace) -> int:
    try:
        settings = flags_over_env(StackSettings, args)
    except ValidationError as e:
        print(f"maskwatch up: {e}", file=sys.stderr)
        return 2
    cfg = StackConfig(
        settings=settings,
        workers=args.workers,
        partitions=args.partitions,
        model_base_path=args.model_base_path,
        site_file=args.site,
        demo_cameras=args.demo_cameras,
        demo_fps=args.demo_fps,
    )
    setup_logging(settings.log_level, settings.log_format, "stack")
    # the terminal shows progress and problems; the stack's own INFO lines go to its log beside the children's
    log_dir = Path(cfg.state_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in root.handlers:  # only the stack's own warnings (clients' chatter stays in the log)
        h.setLevel(logging.WARNING)
        h.addFilter(logging.Filter("maskwatch"))
    to_file = logging.FileHandler(log_dir / "stack.log")
    to_file.setFormatter(root.handlers[0].formatter)
    root.addHandler(to_file)
    return Stack(cfg, stop_event()).run()


def stats_rows(store: Store, window: str, camera: str | None, now_ms: int) -> list[CameraSummary]:
    """The camera summaries `maskwatch stats` shows: GET /api/cameras (or /api/cameras/<id>) without the series."""
    minutes = WINDOWS[window]
    if camera is None:
        return camera_summaries(store, minutes, now_ms)
    return [camera_summary(store, camera, minutes, now_ms)]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def print_table(window: str, rows: list[CameraSummary]) -> None:
    print(
        f"{'camera':<16} {'status':<13} {'compliance':>10} {'people':>7} {'mask':>6} {'no mask':>8} {'wrong':>6} "
        f"{'frames':>8} {'age s':>6}   window {window}"
    )
    for r in rows:
        w = r.window
        age = "-" if r.data_age_s is None else f"{r.data_age_s:.0f}"
        print(
            f"{r.camera:<16} {r.status:<13} {_pct(r.compliance):>10} {r.persons['persons']:>7} "
            f"{w.with_mask:>6} {w.without_mask:>8} {w.mask_worn_incorrectly:>6} {w.frames:>8} {age:>6}"
        )
        if r.last_error and r.status != "online":  # why it does not send
            print(f"{'':<16} last error: {r.last_error}")


def print_history(body: dict[str, Any], tz: Any) -> None:
    """`maskwatch stats --from/--to`: one line per bucket, then the range's total."""
    import datetime as dt

    subject = f"camera {body['camera']}" if body["camera"] else f"zone {body['zone']}" if body["zone"] else "whole site"
    print(f"{subject}, {body['resolution']} buckets")
    print(f"{'bucket start':<20} {'compliance':>10} {'faces':>7} {'mask':>6} {'no mask':>8} {'wrong':>6} {'people':>7}")
    fmt = {"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}[body["resolution"]]
    for r in [*body["series"], {**body["total"], "ts_ms": None}]:
        when = "total" if r["ts_ms"] is None else dt.datetime.fromtimestamp(r["ts_ms"] / 1000, tz).strftime(fmt)
        faces = r["with_mask"] + r["without_mask"] + r["mask_worn_incorrectly"]
        print(
            f"{when:<20} {_pct(r['compliance']):>10} {faces:>7} {r['with_mask']:>6} {r['without_mask']:>8} "
            f"{r['mask_worn_incorrectly']:>6} {r['persons']:>7}"
        )


def _history(args: argparse.Namespace, store: Store) -> int:
    from maskwatch import history

    try:
        tz = history.timezone(args.timezone)
        now = int(time.time() * 1000)
        to = history.parse_instant(args.to, tz, end=True) if args.to else now
        start = history.parse_instant(args.from_, tz) if args.from_ else to - 7 * 86_400_000
        if args.zone is not None and args.zone not in store.zones():
            print(f"maskwatch stats: unknown zone {args.zone!r} (known: {', '.join(store.zones()) or 'none'})", file=sys.stderr)
            return 1
        resolution = args.resolution or history.pick_resolution(start, to, now, store.minute_ttl_s, args.zone is not None)
        body = history.payload(store, start, to, args.camera, args.zone, resolution)
    except history.RangeError as exc:
        print(f"maskwatch stats: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print_history(body, tz)
    return 0


def _stats(args: argparse.Namespace) -> int:
    settings = flags_over_env(CommonSettings, args)
    if args.camera is not None and not is_valid_camera_id(args.camera):
        print(f"maskwatch stats: {args.camera!r} is not a camera id", file=sys.stderr)
        return 2
    if args.camera is not None and args.zone is not None:
        print("maskwatch stats: --camera and --zone are exclusive", file=sys.stderr)
        return 2
    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    try:
        if args.camera is not None and not store.has_camera(args.camera):
            print(f"maskwatch stats: unknown camera {args.camera!r} (known: {', '.join(store.camera_ids()) or 'none'})", file=sys.stderr)
            return 1
        if args.from_ or args.to or args.zone is not None:
            return _history(args, store)
        rows = stats_rows(store, args.window, args.camera, int(time.time() * 1000))
    except (redis.RedisError, OSError) as exc:
        print(f"maskwatch stats: Redis at {settings.redis_url.split('@')[-1]} is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps({"window": args.window, "window_minutes": WINDOWS[args.window], "cameras": [r.to_json() for r in rows]}, indent=2))
        return 0
    if not rows:
        print("no cameras yet: start a producer (`python -m producer --site site.yaml`) or `maskwatch up`")
        return 0
    print_table(args.window, rows)
    return 0


def _cameras_remove(args: argparse.Namespace) -> int:
    settings = flags_over_env(CommonSettings, args)
    if not is_valid_camera_id(args.camera):
        print(f"maskwatch cameras remove: {args.camera!r} is not a camera id", file=sys.stderr)
        return 2
    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    try:
        retired = remove_camera(store, args.camera)
    except KeyError:
        print(f"maskwatch cameras remove: unknown camera {args.camera!r}", file=sys.stderr)
        return 1
    except CameraStillSent as e:
        print(f"maskwatch cameras remove: {e}", file=sys.stderr)
        return 1
    except (redis.RedisError, OSError) as exc:
        print(f"maskwatch cameras remove: Redis at {settings.redis_url.split('@')[-1]} is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if retired:
        print(f"camera {args.camera} retired: it leaves the overview, /api/cameras and the site's figures; its history stays")
    else:
        print(f"camera {args.camera} was already retired")
    return 0


def _report(args: argparse.Namespace) -> int:
    """`maskwatch report`: the dashboard's GET /api/report written from the command line."""
    from maskwatch import history, report
    from maskwatch.site import SiteError, load_site

    settings = flags_over_env(CommonSettings, args)
    try:
        site = load_site(args.site) if args.site else None
    except SiteError as exc:
        print(f"maskwatch report: {exc}", file=sys.stderr)
        return 2
    tz_name = site.timezone if site is not None else "UTC"
    if args.camera is not None and args.zone is not None:
        print("maskwatch report: --camera and --zone are exclusive", file=sys.stderr)
        return 2
    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    try:
        tz = history.timezone(tz_name)
        now = int(time.time() * 1000)
        to = history.parse_instant(args.to, tz, end=True) if args.to else now
        start = history.parse_instant(args.from_, tz) if args.from_ else to - 7 * 86_400_000
        if to <= start:
            raise history.RangeError("`--to` must be after `--from`")
        if args.camera is not None and not store.has_camera(args.camera):
            print(f"maskwatch report: unknown camera {args.camera!r}", file=sys.stderr)
            return 1
        if args.zone is not None and args.zone not in store.zones():
            print(f"maskwatch report: unknown zone {args.zone!r} (known: {', '.join(store.zones()) or 'none'})", file=sys.stderr)
            return 1
        shifts = site.shifts if site is not None else []
        req = report.ReportRequest(start, to, args.camera, args.zone, tz_name, shifts, site.site if site else "")
        body = report.build(store, req, now)
        text = report.to_csv(body) if args.format == "csv" else report.to_html(body, store)
    except history.RangeError as exc:
        print(f"maskwatch report: {exc}", file=sys.stderr)
        return 2
    except (redis.RedisError, OSError) as exc:
        print(f"maskwatch report: Redis at {settings.redis_url.split('@')[-1]} is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"report written to {args.out}", file=sys.stderr)
    return 0


def token_line(name: str, role: str, zones: list[str], cameras: list[str], digest: str) -> str:
    """The site file's `access:` line for a token (flow style, ready to paste)."""
    parts = [f"name: {json.dumps(name)}", f"role: {role}"]
    if zones:
        parts.append(f"zones: [{', '.join(json.dumps(z) for z in zones)}]")
    if cameras:
        parts.append(f"cameras: [{', '.join(json.dumps(c) for c in cameras)}]")
    parts.append(f"sha256: {digest}")
    return "  - {" + ", ".join(parts) + "}"


def _token_new(args: argparse.Namespace) -> int:
    """`maskwatch token new NAME`: a fresh random token and its `access:` line (only the digest goes in the file)."""
    import hashlib
    import secrets

    from maskwatch.site import AccessEntry

    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    try:
        AccessEntry(name=args.name, role=args.role, zones=args.zone, cameras=args.camera, sha256=digest)
    except ValueError as exc:
        print(f"maskwatch token new: {exc}", file=sys.stderr)
        return 2
    print(f"token: {token}")
    print("give the token to its holder (Authorization: Bearer TOKEN, or the login page); it is not stored anywhere.")
    print("add this line under `access:` in the site file:")
    print(token_line(args.name, args.role, args.zone, args.camera, digest))
    return 0


def _cameras_reload(args: argparse.Namespace) -> int:
    from producer.reload import cameras_reload

    settings = flags_over_env(CommonSettings, args)
    return cameras_reload(settings.redis_url, settings.redis_prefix, timeout_s=args.timeout)


def _site_check(args: argparse.Namespace) -> int:
    """Validate a site file without starting anything: the same checks as the producer's load and reload."""
    try:
        site = load_site(args.file, check_sources=True)
    except SiteError as e:
        print(e, file=sys.stderr)
        return 1
    enabled = sum(c.enabled for c in site.cameras)
    print(f"{args.file}: ok: site {site.site!r}, {len(site.cameras)} cameras ({enabled} enabled)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="maskwatch", description="MaskWatch: live face-mask compliance across cameras")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the whole stack on this machine (Tansu, Redis, model server, workers, producer, dashboard)")
    up.add_argument("--site", help="site YAML (default: 3 demo cameras)")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--partitions", type=int, default=12)
    up.add_argument(
        "--kafka", help="Kafka bootstrap (default MW_KAFKA, else 127.0.0.1:9092); a free local port gets the embedded broker"
    )
    up.add_argument(
        "--redis-url",
        help="Redis (default MW_REDIS_URL); a named one that runs is used, else the stack starts its own",
    )
    up.add_argument("--redis-prefix", help="prefix of the site's Redis keys (default MW_REDIS_PREFIX, else mw:)")
    up.add_argument(
        "--serving", help="TF Serving gRPC host:port (default MW_SERVING, else 127.0.0.1:8500); a free local port gets ours"
    )
    up.add_argument("--dashboard-port", type=int, help="default MW_DASHBOARD_PORT, else 5000")
    up.add_argument("--model-base-path", default=f"models/{MODEL_NAME}")
    up.add_argument("--demo-cameras", type=int, default=3)
    up.add_argument("--demo-fps", type=float, default=2.0)
    up.set_defaults(fn=_up)
    st = sub.add_parser(
        "stats", help="per-camera compliance from Redis: the numbers of the dashboard's GET /api/cameras"
    )
    st.add_argument("--window", choices=list(WINDOWS), default="15m", help="window of per-minute buckets (default 15m)")
    st.add_argument("--camera", help="only this camera (like GET /api/cameras/<id>)")
    st.add_argument("--json", action="store_true", help="JSON: {window, window_minutes, cameras: [camera_summary]}")
    st.add_argument("--from", dest="from_", help="history from (epoch ms, ISO date or date-time): per-bucket series like GET /api/history")
    st.add_argument("--to", help="history to (default now; an ISO date includes that day)")
    st.add_argument("--zone", help="history of one zone (its own hourly and daily buckets)")
    st.add_argument("--resolution", choices=["minute", "hour", "day"], help="default: the one the range calls for")
    st.add_argument("--timezone", default="UTC", help="IANA zone of dates given and printed (default UTC)")
    add_flags(st, CommonSettings, "redis_url", "redis_prefix")
    st.set_defaults(fn=_stats)
    rep = sub.add_parser("report", help="a compliance report over a range (the dashboard's GET /api/report): HTML or CSV")
    rep.add_argument("--from", dest="from_", help="start: epoch ms, ISO date or date-time (default: 7 days before --to)")
    rep.add_argument("--to", help="end (default now; an ISO date includes that day)")
    rep.add_argument("--camera", help="only this camera")
    rep.add_argument("--zone", help="only this zone")
    rep.add_argument("--format", choices=["html", "csv"], default="html")
    rep.add_argument("--out", help="file to write (default: standard output)")
    rep.add_argument("--site", help="site YAML: its name, time zone and shifts")
    add_flags(rep, CommonSettings, "redis_url", "redis_prefix")
    rep.set_defaults(fn=_report)
    tok = sub.add_parser("token", help="dashboard access tokens")
    tok_sub = tok.add_subparsers(dest="token_cmd", required=True)
    tn = tok_sub.add_parser("new", help="print a new token and its `access:` line for the site file")
    tn.add_argument("name", help="who will hold it")
    tn.add_argument("--role", choices=["viewer", "admin"], default="viewer")
    tn.add_argument("--zone", action="append", default=[], help="a zone it sees (repeat for more); none: all")
    tn.add_argument("--camera", action="append", default=[], help="a camera it sees (repeat for more)")
    tn.set_defaults(fn=_token_new)
    cams = sub.add_parser("cameras", help="camera management")
    cams_sub = cams.add_subparsers(dest="cameras_cmd", required=True)
    rl = cams_sub.add_parser("reload", help="ask every running producer to re-read its site file (like SIGHUP)")
    add_flags(rl, CommonSettings, "redis_url", "redis_prefix")
    rl.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the producers' answers")
    rl.set_defaults(fn=_cameras_reload)
    rm = cams_sub.add_parser(
        "remove", help="retire a camera no producer runs: it leaves the overview, /api/cameras and site figures"
    )
    rm.add_argument("camera")
    add_flags(rm, CommonSettings, "redis_url", "redis_prefix")
    rm.set_defaults(fn=_cameras_remove)
    sc = sub.add_parser("site", help="site file tools")
    sc_sub = sc.add_subparsers(dest="site_cmd", required=True)
    chk = sc_sub.add_parser("check", help="validate a site file (fields, and that file/folder sources exist); starts nothing")
    chk.add_argument("file")
    chk.set_defaults(fn=_site_check)
    # both modules import TensorFlow only inside run()
    from training import cli as train_cli
    from training.eval import cli as eval_cli

    ev = sub.add_parser("eval", help="VOC AP, recall by face size, the operator's compliance error and frames/s of a model (in-process or --serving), or K fold reports aggregated (--aggregate)")
    eval_cli.add_arguments(ev)
    ev.set_defaults(fn=eval_cli.run)
    tr = sub.add_parser("train", help="fine-tune the detector and the 3-class classifier; export a new model version, or cross-validate the recipe (--folds)")
    train_cli.add_arguments(tr)
    tr.set_defaults(fn=train_cli.run)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
