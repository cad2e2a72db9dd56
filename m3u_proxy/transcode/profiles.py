"""Transcoding profiles: ffmpeg argument templates, checked before anything runs (sans-io).

A profile is m3u-editor's template form, e.g.
``-i {input_url} -c:v libx264 -preset veryfast -c:a aac -f mpegts {output_args|pipe:1}``,
with ``{name}`` / ``{name|default}`` placeholders filled from ``profile_variables``.
The proxy fills ``{input_url}`` (the provider bytes it pipes into ffmpeg's stdin),
``{output_args}`` (stdout for MPEG-TS, a directory it owns for HLS) and ``{hwaccel}``
(empty without hardware acceleration): the client never chooses what ffmpeg opens.

ffmpeg gets an argument list, never a shell, and a template is refused (`ProfileError`,
a 422 naming the problem) unless: its placeholders are known; ``-i`` appears once, as
``-i {input_url}``; its only output is ``{output_args}``, last; its output format is
MPEG-TS or HLS; and it has no option or filter that reads or writes files or devices
(``-f lavfi``, ``movie=``, ``subtitles=``, ``-attach``, ``-report``, ...). Shell
metacharacters are refused too: they would do nothing without a shell, so a template
holding them was written for one and is not what it seems.
"""

import re
import shlex
from collections.abc import Mapping
from typing import cast

import attrs

MAX_TEMPLATE = 4096
MAX_VARIABLE = 256
PROXY_FILLED = ("input_url", "output_args", "hwaccel")
OUTPUT_FORMATS = ("mpegts", "hls")
INPUT_FORMATS = ("mpegts",)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([^{}]*))?\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:,=+/@%*-]*")
_SHELL = re.compile(r"[;&|$`<>\\!\x00-\x1f\x7f]")
# Options without a value (everything else starting with "-" takes the next token).
_FLAGS = frozenset(
    [
        "-y",
        "-n",
        "-re",
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-stats",
        "-an",
        "-vn",
        "-sn",
        "-dn",
        "-shortest",
        "-copyts",
        "-start_at_zero",
        "-accurate_seek",
        "-noaccurate_seek",
        "-ignore_unknown",
        "-copyinkf",
        "-autorotate",
        "-noautorotate",
        "-xerror",
        "-benchmark",
    ]
)
# Options that read or write files, devices or the network, or that the proxy sets.
_DENIED = frozenset(
    [
        "-attach",
        "-dump_attachment",
        "-report",
        "-vstats",
        "-vstats_file",
        "-passlogfile",
        "-pass",
        "-progress",
        "-sdp_file",
        "-stats_file",
        "-filter_script",
        "-filter_complex_script",
        "-protocol_whitelist",
        "-protocol_blacklist",
        "-hls_segment_filename",
        "-hls_base_url",
        "-hls_key_info_file",
        "-master_pl_name",
        "-var_stream_map",
        "-init_hw_device",
        "-filter_hw_device",
        "-hwaccel_device",
        "-safe",
        "-loglevel",
        "-v",
        "-stdin",
        "-dump",
        "-cookies",
        "-headers",
        "-user_agent",
        "-http_proxy",
    ]
)
_FILTER_OPTIONS = re.compile(r"-(?:vf|af|filter|filter_complex|lavfi)(?::.*)?$")
_BAD_FILTER = re.compile(
    r"(?:^|[,;\[\]'\"\s])(?:a?movie|a?sendcmd|a?zmq|subtitles|ass|ladspa|lv2|frei0r|"
    r"a?evalsrc|openclsrc)\b|(?:file|filename|textfile|fontfile)\s*=",
    re.IGNORECASE,
)


class ProfileError(ValueError):
    """A template that will not be run; the message names the problem."""


@attrs.frozen
class Profile:
    """A checked profile: its argument template and the output format it produces."""

    name: str
    description: str
    format: str  # "mpegts" or "hls"
    args: str  # the template, as given

    def public(self) -> dict[str, str]:
        return {"description": self.description, "format": self.format, "args": self.args}


BUILT_IN: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            "remux",
            "MPEG-TS with the provider's codecs copied (repairs timestamps, no re-encode)",
            "mpegts",
            "-i {input_url} -map 0:v? -map 0:a? -c copy -f mpegts {output_args|pipe:1}",
        ),
        Profile(
            "h264_aac",
            "H.264 video and AAC stereo audio at the source size, for any player",
            "mpegts",
            "{hwaccel} -i {input_url} -map 0:v:0? -map 0:a:0? -c:v libx264 -preset veryfast "
            "-tune zerolatency -g 50 -c:a aac -b:a 128k -ac 2 -f mpegts {output_args|pipe:1}",
        ),
        Profile(
            "h264_720p",
            "H.264 at 720p (3 Mbit/s) and AAC stereo, for slow links and old TVs",
            "mpegts",
            "{hwaccel} -i {input_url} -map 0:v:0? -map 0:a:0? -vf scale=-2:720 -c:v libx264 "
            "-preset veryfast -tune zerolatency -b:v {bitrate|3M} -maxrate {bitrate|3M} "
            "-bufsize 6M -g 50 -c:a aac -b:a 128k -ac 2 -f mpegts {output_args|pipe:1}",
        ),
        Profile(
            "hls",
            "H.264 and AAC as HLS (2 s segments) for browsers and HLS-only players",
            "hls",
            "{hwaccel} -i {input_url} -map 0:v:0? -map 0:a:0? -c:v libx264 -preset veryfast "
            "-g 48 -sc_threshold 0 -c:a aac -b:a 128k -ac 2 -f hls {output_args}",
        ),
    )
}


def check_variables(value: object) -> dict[str, str]:
    """``profile_variables``: a flat object of safe scalar values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ProfileError("profile_variables must be an object")
    out: dict[str, str] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
            raise ProfileError(f"profile_variables: {name!r} is not a variable name")
        if name in PROXY_FILLED:
            raise ProfileError(f"profile_variables: {{{name}}} is filled by the proxy")
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ProfileError(f"profile_variables.{name} must be a string or a number")
        text = str(raw)
        if len(text) > MAX_VARIABLE or not _SAFE_VALUE.fullmatch(text):
            raise ProfileError(f"profile_variables.{name} has characters a profile cannot use")
        out[name] = text
    return out


def _substitute(template: str, variables: Mapping[str, str]) -> str:
    """Fill client variables; keep the proxy's placeholders as bare ``{name}``."""

    def fill(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in PROXY_FILLED:
            return "{" + name + "}"
        if name in variables:
            return variables[name]
        if default is not None and _SAFE_VALUE.fullmatch(default):
            return default
        raise ProfileError(f"profile: unknown placeholder {{{name}}} (no variable, no default)")

    return _PLACEHOLDER.sub(fill, template)


def check_template(template: object, variables: Mapping[str, str]) -> tuple[list[str], str]:
    """The argument list (proxy placeholders left in) and the output format; or
    `ProfileError` naming what is wrong."""
    if not isinstance(template, str) or not template.strip():
        raise ProfileError("profile must be a non-empty string (a template or a built-in name)")
    if len(template) > MAX_TEMPLATE:
        raise ProfileError(f"profile is longer than {MAX_TEMPLATE} characters")
    if _SHELL.search(_PLACEHOLDER.sub("", template)):
        raise ProfileError("profile contains shell metacharacters; ffmpeg runs without a shell")
    try:
        tokens = shlex.split(_substitute(template, variables))
    except ValueError as exc:
        raise ProfileError(f"profile cannot be split into arguments: {exc}") from exc
    return tokens, _check_tokens(tokens)


def _check_tokens(args: list[str]) -> str:
    walk = _Walk(args)
    index = 0
    while index < len(args):
        index = walk.step(index)
    return walk.finish()


class _Walk:
    """One pass over the arguments: where the input is, what the output is."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.inputs = 0
        self.outputs = 0
        self.output_format: str | None = None

    def step(self, index: int) -> int:
        """Check the argument at ``index`` (and its value); the index after them."""
        arg = self.args[index]
        if arg in ("{hwaccel}", "{output_args}"):
            self._placeholder(arg, index)
            return index + 1
        if "{" in arg or "}" in arg:
            raise ProfileError(f"profile: placeholder misplaced in {arg!r}")
        if not arg.startswith("-") or _is_number(arg):
            raise ProfileError(
                f"profile: {arg!r} would be another output; only {{output_args}} is allowed"
            )
        if arg.startswith("-/") or arg.split(":", 1)[0] in _DENIED:
            raise ProfileError(f"profile: option {arg} is not allowed")
        if arg in _FLAGS:
            return index + 1
        if index + 1 >= len(self.args):
            raise ProfileError(f"profile: option {arg} has no value")
        self._option(arg, self.args[index + 1])
        return index + 2

    def _placeholder(self, arg: str, index: int) -> None:
        if arg == "{hwaccel}" and self.inputs:
            raise ProfileError("profile: {hwaccel} belongs before -i")
        if arg == "{output_args}":
            if index != len(self.args) - 1:
                raise ProfileError("profile: {output_args} must be the last argument")
            self.outputs += 1

    def _option(self, option: str, value: str) -> None:
        if option == "-i":
            if value != "{input_url}" or self.inputs:
                raise ProfileError("profile: the only input allowed is -i {input_url}")
            self.inputs += 1
        elif "{" in value:
            raise ProfileError(f"profile: placeholder misplaced after {option}")
        elif option.split(":", 1)[0] == "-f":
            allowed = OUTPUT_FORMATS if self.inputs else INPUT_FORMATS
            if value not in allowed:
                side = "output" if self.inputs else "input"
                raise ProfileError(f"profile: {side} format -f {value} is not allowed")
            if self.inputs:
                self.output_format = value
        elif _FILTER_OPTIONS.fullmatch(option) and _BAD_FILTER.search(value):
            raise ProfileError(f"profile: filter in {option} reads files or commands")

    def finish(self) -> str:
        if self.inputs != 1:
            raise ProfileError("profile must read its input with -i {input_url}")
        if self.outputs != 1:
            raise ProfileError("profile must end with {output_args}")
        if self.output_format is None:
            raise ProfileError("profile must choose its output format: -f mpegts or -f hls")
        return self.output_format


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def resolve(profile: object, variables: Mapping[str, str]) -> tuple[str, list[str], str]:
    """A profile name or template → (the template, its checked arguments, its format)."""
    if isinstance(profile, str) and profile in BUILT_IN:
        profile = BUILT_IN[profile].args
    tokens, output_format = check_template(profile, variables)
    return cast("str", profile), tokens, output_format


def expand(
    tokens: list[str], *, input_url: str, output_args: list[str], hwaccel: list[str]
) -> list[str]:
    """Fill the proxy's placeholders: the final argument list after ``ffmpeg``."""
    fills = {"{input_url}": [input_url], "{output_args}": output_args, "{hwaccel}": hwaccel}
    out: list[str] = []
    for arg in tokens:
        out.extend(fills.get(arg, [arg]))
    return out
