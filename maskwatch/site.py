"""The site file (`site.yaml`): cameras and their sources, validated so an error names the file, line, camera and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from maskwatch.alerts import AlertsConfig
from maskwatch.frames import is_valid_camera_id

# the synthetic demo scenes (producer/scene.py draws them)
SCENES = ("mixed", "masked", "bare")

SourceKind = Literal["synthetic", "file", "folder", "rtsp", "http", "mjpeg", "webcam"]
DropPolicy = Literal["drop_oldest", "drop_newest", "wait"]

_SCHEMES = ("rtsp", "rtsps", "http", "https", "mjpeg+http", "mjpeg+https")
_SYNTHETIC_RE = re.compile(r"^synthetic(?::(?P<scene>[a-z]*))?(?:@(?P<w>\d{2,4})x(?P<h>\d{2,4}))?$")
_WEBCAM_RE = re.compile(r"^webcam:(?P<index>\d{1,2})$")
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


class SiteError(ValueError):
    """A site file that cannot be used; the message names file, line, camera and field."""


# Query parameters whose value is a credential: password, passwd, pwd, token, secret, api_key, auth, sig, ...
_SECRET_PARAM_RE = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred|session", re.IGNORECASE)
# What follows the userinfo's "@": a host (name, IPv4 or [IPv6]) and port, then the path, query or the end.
_AFTER_USERINFO_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]*)(?::\d*)?(?=[/?#]|$)")


def redact(source: str) -> str:
    """`source` with its credentials replaced by ***, for logs and Redis (cameras embed them in URLs).

    The password of the userinfo is hidden whatever it holds (`#`, `/`, `?`, `@` included: the userinfo is taken
    up to the last `@` that a host follows), and so is the value of every query parameter named like a
    credential (`password`, `pwd`, `token`, `secret`, `api_key`, `auth`, `signature`, ...).
    """
    m = _SCHEME_RE.match(source)
    if m is None:
        return source
    head, rest = source[: m.end()], source[m.end() :]
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) >= 0:
        if _AFTER_USERINFO_RE.match(rest[at + 1 :]):
            user, sep, _ = rest[:at].partition(":")
            rest = f"{user}:***{rest[at:]}" if sep else rest
            break
    path_end = min(i for i in (rest.find("?"), len(rest)) if i >= 0)
    if path_end == len(rest):
        return head + rest
    params = []
    for param in rest[path_end + 1 :].split("&"):
        name, eq, _ = param.partition("=")
        params.append(f"{name}=***" if eq and _SECRET_PARAM_RE.search(name) else param)
    return head + rest[:path_end] + "?" + "&".join(params)


def _is_synthetic(source: str) -> bool:
    return source == "synthetic" or source.startswith(("synthetic:", "synthetic@"))


def parse_synthetic(source: str) -> tuple[str, int, int]:
    """`synthetic[:scene][@WxH]` → (scene, width, height); the demo scene, 640×480 unless a size is given."""
    m = _SYNTHETIC_RE.fullmatch(source)
    if m is None:
        raise ValueError("synthetic source must look like synthetic:<scene>[@<width>x<height>]")
    scene = m["scene"] or "mixed"
    if scene not in SCENES:
        raise ValueError(f"unknown synthetic scene {scene!r}; choose one of {', '.join(SCENES)}")
    w, h = int(m["w"] or 640), int(m["h"] or 480)
    if not (32 <= w <= 4096 and 32 <= h <= 4096):
        raise ValueError("synthetic size must be between 32x32 and 4096x4096")
    return scene, w, h


class CameraConfig(BaseModel):
    """One camera of the site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Camera id (Kafka key), Contract 1 pattern")
    name: str = Field("", max_length=200, description="Human name shown on the dashboard")
    zone: str = Field("", max_length=100, description="Zone used to group cameras")
    source: str = Field(
        min_length=1,
        max_length=2000,
        description="synthetic:<scene>[@WxH], a video file, a folder of images, rtsp(s)://…, http(s)://… "
        "(MJPEG and JPEG snapshots are read directly, anything else through FFmpeg), mjpeg+http(s)://…, webcam:<n>",
    )
    fps: float = Field(5.0, gt=0, le=60, description="Frames per second sampled from the source and sent to Kafka")
    max_width: int = Field(640, ge=64, le=4096, description="Frames wider than this are resized before encoding")
    quality: int = Field(80, ge=30, le=100, description="JPEG quality")
    loop: bool = Field(True, description="Loop file and folder sources; when false the camera ends after one pass")
    enabled: bool = Field(True, description="Disabled cameras are not started")
    drop_policy: DropPolicy | None = Field(
        None,
        description="When the encoder cannot keep up: drop_oldest (default) or drop_newest frame in the hand-off queue, "
        "or wait (pace sampling to the encoder). Play-once file and folder sources default to wait, so a recording is sent whole",
    )
    queue_size: int = Field(2, ge=1, le=64, description="Frames held between capture and encode/publish")
    open_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Longest a stream may take to connect and send its first frame"
    )
    read_timeout_s: float = Field(
        5.0, gt=0, le=60, description="A live stream with no new frame for this long is reconnected"
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not is_valid_camera_id(v):
            raise ValueError("must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be empty")
        if _is_synthetic(v):
            parse_synthetic(v)
        elif v.startswith("webcam:"):
            if not _WEBCAM_RE.fullmatch(v):
                raise ValueError("webcam source must look like webcam:<index>, e.g. webcam:0")
        elif (m := _SCHEME_RE.match(v)) is not None:
            scheme = m["scheme"].lower()
            if scheme not in _SCHEMES:
                raise ValueError(f"unsupported scheme {scheme}://; use one of {', '.join(s + '://' for s in _SCHEMES)}")
            if not urlsplit(v).hostname:
                raise ValueError(f"no host in {redact(v)}")
        return v

    @property
    def kind(self) -> SourceKind:
        s = self.source
        if _is_synthetic(s):
            return "synthetic"
        if s.startswith("rtsp://") or s.startswith("rtsps://"):
            return "rtsp"
        if s.startswith("mjpeg+http://") or s.startswith("mjpeg+https://"):
            return "mjpeg"
        if s.startswith("http://") or s.startswith("https://"):
            return "http"
        if s.startswith("webcam:"):
            return "webcam"
        return "folder" if s.endswith("/") or Path(s).is_dir() else "file"

    @property
    def live(self) -> bool:
        """True for sources that run on their own clock (streams, webcams); they are sampled, never paced."""
        return self.kind in ("rtsp", "http", "mjpeg", "webcam")

    @property
    def handoff_policy(self) -> DropPolicy:
        """The drop policy in force: the configured one, else `wait` for play-once recordings, else `drop_oldest`."""
        if self.drop_policy is not None:
            return self.drop_policy
        return "wait" if self.kind in ("file", "folder") and not self.loop else "drop_oldest"

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def safe_source(self) -> str:
        return redact(self.source)


_HHMM_RE = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")


class Shift(BaseModel):
    """A named shift in the site's local time; `end` before `start` runs past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, description="Shift name shown in reports")
    start: str = Field(description="Local start time HH:MM")
    end: str = Field(description="Local end time HH:MM (exclusive)")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM_RE.fullmatch(v):
            raise ValueError("must be a 24-hour time HH:MM, e.g. 06:00")
        return v

    def minutes(self) -> tuple[int, int]:
        (sh, sm), (eh, em) = (map(int, t.split(":")) for t in (self.start, self.end))
        return sh * 60 + sm, eh * 60 + em

    def covers(self, minute_of_day: int) -> bool:
        """True when a local time of day (minutes after midnight) falls in this shift."""
        start, end = self.minutes()
        return start <= minute_of_day < end if start < end else minute_of_day >= start or minute_of_day < end


ROLES = ("viewer", "admin")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# the principal MW_DASHBOARD_TOKEN logs in as (an admin seeing everything): no access entry may take its name
MAIN_TOKEN_NAME = "token"


class AccessEntry(BaseModel):
    """A dashboard token: who holds it, what it may do and see; the token itself is never written down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Who holds the token (logs, sessions)")
    role: Literal["viewer", "admin"] = Field("viewer", description="viewer: read only; admin: also /check")
    zones: list[str] = Field(default_factory=list, description="Zones it sees (with `cameras`: either); none: all")
    cameras: list[str] = Field(default_factory=list, description="Cameras it sees besides its zones")
    sha256: str = Field(description="SHA-256 of the token in hex (`maskwatch token new NAME` prints both)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        if v == MAIN_TOKEN_NAME:
            raise ValueError(f"{MAIN_TOKEN_NAME!r} is the name of MW_DASHBOARD_TOKEN's admin; pick another")
        return v

    @field_validator("sha256")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not _SHA256_RE.fullmatch(v):
            raise ValueError("must be the token's SHA-256 as 64 lower-case hex digits (never the token itself)")
        return v


class SiteConfig(BaseModel):
    """A whole site: its name and cameras."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field("site", min_length=1, max_length=100, description="Site name")
    timezone: str = Field("UTC", description="IANA time zone for display")
    cameras: list[CameraConfig] = Field(default_factory=list, description="Cameras")
    alerts: AlertsConfig | None = Field(
        None, description="Compliance alert rules, evaluated by the dashboard (maskwatch/alerts.py); none: no alerts"
    )
    shifts: list[Shift] = Field(default_factory=list, description="Named shifts that reports break compliance down by")
    access: list[AccessEntry] = Field(
        default_factory=list, description="Dashboard tokens scoped by zone and camera (besides MW_DASHBOARD_TOKEN)"
    )

    @field_validator("access")
    @classmethod
    def _access_unique(cls, v: list[AccessEntry]) -> list[AccessEntry]:
        for what in ("name", "sha256"):
            values = [getattr(a, what) for a in v]
            dup = next((x for x in values if values.count(x) > 1), None)
            if dup is not None:
                raise ValueError(f"two access entries share the {what} {dup[:16]!r}")
        return v

    @field_validator("shifts")
    @classmethod
    def _shift_names(cls, v: list[Shift]) -> list[Shift]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate shift name {dup[0]!r}")
        for s in v:
            if s.start == s.end:
                raise ValueError(f"shift {s.name!r} starts and ends at {s.start}")
        return v

    @field_validator("cameras")
    @classmethod
    def _unique(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for c in v:
            if c.id in seen:
                raise ValueError(f"duplicate camera id {c.id!r}")
            seen.add(c.id)
        return v


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk a composed YAML node along a pydantic error location; return the 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if nxt is None:
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def source_problem(cam: CameraConfig) -> str | None:
    """Why a `file` or `folder` source cannot be read on this machine (relative paths from the working
    directory, as the producer opens them); None when it can, or when the source is not a local path."""
    if cam.kind not in ("file", "folder"):
        return None
    p = Path(cam.source)
    if not p.exists():
        return f"no such {'folder' if cam.kind == 'folder' else 'file'}: {cam.source}"
    if cam.kind == "folder" and not p.is_dir():
        return f"not a folder: {cam.source}"
    if cam.kind == "file" and not p.is_file():
        return f"not a file: {cam.source}"
    return None


def parse_site(text: str, path: str = "<site>", check_sources: bool = False) -> SiteConfig:
    """Parse and validate a site file's text; with `check_sources`, enabled `file`/`folder` sources must exist
    here too (the producer and `maskwatch site check` ask for that; a dashboard on another host does not)."""
    try:
        node = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise SiteError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SiteError(f"{path}:1: the site file must be a mapping with `site` and `cameras`")
    try:
        site = SiteConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            line = _line_of(node, loc)
            camera = ""
            if len(loc) >= 2 and loc[0] == "cameras" and isinstance(loc[1], int):
                cams = data.get("cameras") or []
                cid = cams[loc[1]].get("id") if loc[1] < len(cams) and isinstance(cams[loc[1]], dict) else None
                camera = f" camera={cid or '#' + str(loc[1])}"
            fld = ".".join(str(p) for p in loc[2:] if not isinstance(p, int)) if camera else ".".join(map(str, loc))
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}:{line}:{camera} field={fld or '(camera)'}: {msg}")
        raise SiteError("\n".join(lines)) from None
    if check_sources:
        problems = [
            f"{path}:{_line_of(node, ('cameras', i, 'source'))}: camera={cam.id} field=source: {why}"
            for i, cam in enumerate(site.cameras)
            if cam.enabled and (why := source_problem(cam)) is not None
        ]
        if problems:
            raise SiteError("\n".join(problems))
    return site


def load_site(path: str | Path, check_sources: bool = False) -> SiteConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SiteError(f"{p}: cannot read site file: {e.strerror}") from None
    return parse_site(text, str(p), check_sources)


def demo_site(cameras: int = 3, fps: float = 2.0) -> SiteConfig:
    """The site `maskwatch up` runs without a site file: synthetic scenes built from real photographs."""
    zones = ["Gate A", "Ward 3", "Line 2"]
    scenes = ["mixed", "masked", "bare"]
    return SiteConfig(
        site="demo",
        cameras=[
            CameraConfig(
                id=f"demo-{i + 1}",
                name=f"Demo camera {i + 1} ({scenes[i % 3]})",
                zone=zones[i % 3],
                source=f"synthetic:{scenes[i % 3]}",
                fps=fps,
            )
            for i in range(cameras)
        ],
    )
